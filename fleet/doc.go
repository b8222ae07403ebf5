// Package fleet reads and writes the fleet and config KV buckets: a node's registration and
// heartbeats, and live views of the fleet and of host configuration.
//
// Edges and DNS servers import it to join the fleet and to follow configuration; the control
// plane imports it to serve the API. It never imports the control package.
package fleet
