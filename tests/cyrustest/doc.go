// Package cyrustest starts real, isolated Cyrus IMAP 3.6 instances on
// 127.0.0.1 for end-to-end tests, demos and benchmarks, and talks to them.
//
// An Instance owns one directory (configdirectory, spool, run and log dirs,
// generated imapd.conf and cyrus.conf) and one cyrus master process running in
// the foreground as a child of the caller. Everything uses the Debian
// cyrus-imapd binaries under /usr/lib/cyrus/bin; the caller must be root
// (master drops to user cyrus itself, tools are run as cyrus:mail).
//
// Launch/Stop/Close are for programs; Start and Skip wrap them for tests.
// Client is a minimal IMAP client (LOGIN, CONDSTORE, MULTIAPPEND with
// LITERAL+, UID STORE/FETCH/EXPUNGE); ParseMbexamine reads the output of
// Cyrus's mbexamine tool, the oracle for what is in cyrus.index.
//
// Cyrus logs only to syslog. When /dev/log is not served, Launch binds a
// small in-process sink to it so tests can read an instance's log lines
// (Instance.Syslog) and assert the absence of IOERRORs.
package cyrustest
