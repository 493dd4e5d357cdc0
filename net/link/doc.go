// Package link carries batches from a primary to a replica over QUIC with
// mutual TLS and pinned certificate fingerprints.
//
// The primary runs a Sender, which dials the replica's Server, opens one
// control stream for the Hello exchange and heartbeats, and one stream per
// batch so that a slow mailbox never holds up another (design rule 9). On
// every (re)connect the replica reports its position per mailbox in a Hello;
// the Sender hands it to a CatchUp hook, which re-derives from the primary's
// own index whatever the replica lacks (rule 1: nothing is queued durably).
//
// Every stream carries typed, length-prefixed frames (see frame.go). A frame
// that is too large, truncated or of an unexpected type resets that stream
// only; the connection and the other streams carry on.
package link

// ALPN is the TLS application protocol both ends must negotiate.
const ALPN = "indexwire/1"
