// Package tcptest tells tests what state a real TCP socket is in, from the kernel (TCP_INFO on
// Linux): what a test must wait for before it checks how a server reacts to a client's move.
package tcptest
