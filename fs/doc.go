// Package fs is indexwire's FUSE overlay: a loopback file system (go-fuse v2)
// put in front of a Cyrus IMAP spool that passes every operation through to
// the backing directory and captures each committed change to a mailbox's
// cyrus.index as one diff.Batch handed to a Sink.
//
// # What goes where
//
// Index files (cyrus.index, cyrus.index.NEW) are served through the daemon so
// their writes are seen: before each write the bytes it replaces are read from
// the backing file with the daemon's own read descriptor, and the pending
// writes of an inode become one batch at the commit point Cyrus uses (the
// fsync that follows the header write at offset 0; also the close of a handle
// that wrote and never fsynced; and rename of cyrus.index.NEW over
// cyrus.index, diffed as whole files). cyrus.header is served through the
// daemon too, uncaptured: Cyrus reads it at every command, and a cached read
// comes from the page cache while a passthrough read marks the inode's atime
// stale and costs a GETATTR at the next fstat. Every other file (message
// files, cyrus.cache, cyrus.annotations, databases) uses kernel FUSE
// passthrough where the kernel offers it, so its reads, writes and mmaps never
// reach the daemon.
//
// The kernel refuses (EIO) to open one inode in passthrough and in cached
// mode at the same time, so the hooked/passthrough decision is taken per
// inode when it has no open handle, from its name at that moment, and kept
// until its last handle is released. A file renamed onto an index name while
// open therefore keeps its mode until closed; its next open is hooked.
//
// Every change must come through the mount (writes behind its back are not
// coherent with mappings through it, see fuse-notes.md), so entries and
// attributes are cached for long, page cache is kept across opens of hooked
// files and not dropped when an index write changes the mtime
// (ExplicitDataCacheControl), and FLUSH is answered by the kernel
// (FOPEN_NOFLUSH).
//
// # Deployments
//
// Whole spool: Config.Mountpoint is the Cyrus partition (or a mountpoint
// whose backing directory is the partition).
//
// Metapartition: Cyrus can keep the small metadata files of each mailbox on a
// separate "metapartition" (imapd.conf: metapartition-default: DIR and
// metapartition_files: index header). Mount the overlay over that directory
// only; message files and cyrus.cache stay on the plain partition and never
// cross FUSE, so only the index and header opens of each command pay a daemon
// round trip. The overlay needs nothing else: cyrus.header sits beside
// cyrus.index in the same mailbox directory, as in whole-spool mode.
//
// No-open (Config.NoOpen, for a metapartition mount): nothing there needs
// passthrough, so the daemon answers OPEN with ENOSYS and the kernel stops
// sending OPEN, RELEASE and FLUSH for the mount; reads, writes and fsyncs
// arrive without a file handle and are served from one daemon descriptor per
// inode (noopen.go). Commits close at the fsync after a header write and at
// a rename over cyrus.index; there is no commit at close (a close without
// fsync leaves its writes pending for the next commit's batch).
//
// In place: with Config.Backing empty the overlay is mounted over the spool
// directory itself. The directory is opened before mounting and served
// through that descriptor (/proc/self/fd/N), so no data moves.
package fs
