package replica

import (
	"crypto/sha1"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/indexwire/indexwire/diff"
)

// synthSpool is a replica spool without Cyrus: a partition, a configdirectory
// and mailboxes written with the diff codec.
type synthSpool struct {
	root, spool, confDir, conf, state string
}

func newSynthSpool(t testing.TB) *synthSpool {
	t.Helper()
	root := t.TempDir()
	s := &synthSpool{root: root, spool: filepath.Join(root, "spool"), confDir: filepath.Join(root, "conf"),
		conf: filepath.Join(root, "imapd.conf"), state: filepath.Join(root, "state")}
	for _, d := range []string{s.spool, s.confDir, s.state} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := "# test\nconfigdirectory: " + s.confDir + "\npartition-default: " + s.spool + "\n"
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *synthSpool) config(log *zap.Logger) Config {
	return Config{Spool: s.spool, CyrusConf: s.conf, StateDir: s.state, Logger: log}
}

func (s *synthSpool) applier(t testing.TB) (*Applier, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	a, err := New(s.config(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	return a, logs
}

func synthGUID(uid uint32) diff.GUID {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uid)
	return sha1.Sum(b[:])
}

const synthUIDValidity = 1700000000

// addMailbox writes a v17 mailbox with n messages (UIDs 1..n, modseq = uid)
// at <spool>/<rel> and returns its directory.
func (s *synthSpool) addMailbox(t testing.TB, rel, id string, n int, flags ...string) string {
	t.Helper()
	dir := filepath.Join(s.spool, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mh := &diff.MailboxHeader{Name: "user.test", UniqueID: id, ACL: []diff.ACLEntry{{ID: "test", Rights: "lrswipkxtecdan"}},
		UserFlags: flags}
	hb := mh.Encode()
	l, _ := diff.LayoutOf(17)
	ix := &diff.Index{Layout: l, Header: &diff.Header{MinorVersion: 17, UIDValidity: synthUIDValidity,
		LastUID: uint32(n), HighestModSeq: uint64(n), HeaderFileCRC: diff.CRC32(hb), LastAppendDate: 1700000000}}
	for i := 1; i <= n; i++ {
		ix.Records = append(ix.Records, &diff.Record{UID: uint32(i), InternalDate: 1700000000 + uint32(i),
			SentDate: 1700000000, Size: 1000 + uint32(i), HeaderSize: 300, GMTime: 1700000000 + uint32(i),
			LastUpdated: 1700000000 + uint32(i), CacheVersion: 12, GUID: synthGUID(uint32(i)),
			ModSeq: uint64(i), CreatedModSeq: uint64(i)})
	}
	ix.Header.SetCounts(diff.Recount(ix, mh.UserFlags))
	ib, err := ix.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cyrus.header"), hb, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cyrus.index"), ib, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// uuidRel is the 3.6 spool path of id.
func uuidRel(id string) string { return filepath.Join("uuid", id[:1], id[1:2], id) }

// loadMailbox decodes a mailbox's index and header and asserts diff.Check.
func loadMailbox(t testing.TB, dir string) (*diff.Index, *diff.MailboxHeader, []byte) {
	t.Helper()
	ib, err := os.ReadFile(filepath.Join(dir, "cyrus.index"))
	if err != nil {
		t.Fatal(err)
	}
	hb, err := os.ReadFile(filepath.Join(dir, "cyrus.header"))
	if err != nil {
		t.Fatal(err)
	}
	ix, err := diff.DecodeIndex(dir, ib)
	if err != nil {
		t.Fatal(err)
	}
	mh, err := diff.ParseMailboxHeader(dir, hb)
	if err != nil {
		t.Fatal(err)
	}
	return ix, mh, hb
}

// flagBatch sets sys flags and keywords on uids with modseqs from base+1.
func flagBatch(id string, oldHMS, base uint64, uids []uint32, sys uint32, kw ...string) *diff.Batch {
	b := &diff.Batch{Mailbox: id, UIDValidity: synthUIDValidity, OldHighestModSeq: oldHMS}
	for i, u := range uids {
		b.Records = append(b.Records, diff.Delta{UID: u, GUID: synthGUID(u), OldModSeq: uint64(u),
			ModSeq: base + uint64(i) + 1, LastUpdated: 1800000000, SystemFlags: sys, UserFlags: kw,
			Changed: diff.FieldSystemFlags | diff.FieldModSeq | diff.FieldLastUpdated})
	}
	b.HighestModSeq = base + uint64(len(uids))
	return b
}
