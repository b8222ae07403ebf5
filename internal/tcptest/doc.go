// Package tcptest holds what tests of TCP servers need from the client's side: the state of a
// real socket, from the kernel (TCP_INFO, Linux), and a reader at a slow link's pace.
package tcptest
