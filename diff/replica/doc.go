// Package replica is the file layer of indexwire's replica applier: it finds
// a mailbox on the replica's Cyrus spool by unique id, takes Cyrus's own locks
// in Cyrus's order, reads cyrus.index and cyrus.header, lets the pure
// diff.Apply compute the record and header bytes, and writes them back
// (records, then header, then fsync) behind a redo file that makes a crash
// mid-apply recoverable on the next start. It also keeps each mailbox's
// replication position for catch-up.
package replica
