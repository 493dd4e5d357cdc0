package diff

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
)

// fetchLine is one IMAP "UID FETCH 1:* (UID FLAGS MODSEQ)" result recorded by
// testdata/gen.sh right after Cyrus wrote the index.
type fetchLine struct {
	UID    uint32   `json:"uid"`
	Flags  []string `json:"flags"`
	ModSeq uint64   `json:"modseq"`
}

// examined is what mbexamine printed for one message.
type examined struct {
	guid      string
	modseq    uint64
	sysflags  uint32
	userflags [4]uint32
}

var mbexRecord = regexp.MustCompile(`(?s)UID:(\d+)\s.*?SYSFLAGS:([0-9A-F]{8}).*?GUID:([0-9a-f]{40}) MODSEQ:(\d+).*?USERFLAGS: ([0-9A-F]{8}) ([0-9A-F]{8}) ([0-9A-F]{8}) ([0-9A-F]{8})`)

func parseMbexamine(t *testing.T, text []byte) map[uint32]examined {
	out := map[uint32]examined{}
	for _, m := range mbexRecord.FindAllSubmatch(text, -1) {
		u := func(i int, base int) uint64 {
			v, err := strconv.ParseUint(string(m[i]), base, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		e := examined{guid: string(m[3]), modseq: u(4, 10), sysflags: uint32(u(2, 16))}
		for k := 0; k < 4; k++ {
			e.userflags[3-k] = uint32(u(5+k, 16)) // mbexamine prints user_flags[3] first
		}
		out[uint32(u(1, 10))] = e
	}
	return out
}

// TestVersionsWrittenByCyrus checks every minor version 12..17 written by
// Cyrus 3.6 (reconstruct -V N, see testdata/gen.sh) against Cyrus's own
// view of the same mailbox: mbexamine and IMAP FETCH.
func TestVersionsWrittenByCyrus(t *testing.T) {
	for v := 12; v <= 17; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			dir := filepath.Join("testdata", fmt.Sprintf("v%d", v))
			raw := mustRead(t, filepath.Join(dir, "cyrus.index"))
			mh, err := ParseMailboxHeader("cyrus.header", mustRead(t, filepath.Join(dir, "cyrus.header")))
			if err != nil {
				t.Fatal(err)
			}
			ix, err := DecodeIndex(dir, raw)
			if err != nil {
				t.Fatal(err)
			}
			if ix.Header.MinorVersion != uint32(v) {
				t.Fatalf("minor version %d", ix.Header.MinorVersion)
			}
			if out, _ := ix.Encode(); !bytes.Equal(out, raw[:len(out)]) {
				t.Fatal("round trip is not byte-identical")
			}
			if ix.Header.HeaderFileCRC != CRC32(mustRead(t, filepath.Join(dir, "cyrus.header"))) {
				t.Errorf("header_file_crc %08x is not the CRC of cyrus.header", ix.Header.HeaderFileCRC)
			}
			if err := Check(dir, ix, mh.UserFlags); err != nil {
				t.Fatal(err)
			}

			exam := parseMbexamine(t, mustRead(t, filepath.Join(dir, "mbexamine.txt")))
			var fetch []fetchLine
			if err := json.Unmarshal(mustRead(t, filepath.Join(dir, "fetch.json")), &fetch); err != nil {
				t.Fatal(err)
			}
			live := 0
			for _, r := range ix.Records {
				e, ok := exam[r.UID]
				if r.Expunged() {
					if ok {
						t.Errorf("uid %d: expunged but mbexamine lists it", r.UID)
					}
					continue
				}
				live++
				if !ok {
					t.Fatalf("uid %d: not in mbexamine output", r.UID)
				}
				if e.guid != r.GUID.String() || e.modseq != r.ModSeq || e.sysflags != r.SystemFlags&0xffff || e.userflags != r.UserFlags {
					t.Errorf("uid %d: mbexamine %+v, decoded guid %s modseq %d flags %08x user %x", r.UID, e, r.GUID, r.ModSeq, r.SystemFlags, r.UserFlags)
				}
			}
			if live != len(exam) || live != len(fetch) || live != int(ix.Header.Exists) {
				t.Fatalf("live records %d, mbexamine %d, fetch %d, exists %d", live, len(exam), len(fetch), ix.Header.Exists)
			}
			for _, f := range fetch {
				r := ix.Records[ix.FindUID(f.UID)]
				got := FlagString(r.SystemFlags, FlagNames(r, mh.UserFlags))
				want := slices.DeleteFunc(slices.Clone(f.Flags), func(s string) bool { return s == `\Recent` })
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) || r.ModSeq != f.ModSeq {
					t.Errorf("uid %d: decoded %v modseq %d, IMAP %v modseq %d", f.UID, got, r.ModSeq, want, f.ModSeq)
				}
			}
		})
	}
}

// TestDiffRealStore diffs the index before and after a real Cyrus
// "UID STORE 3 +FLAGS (\Seen)".
func TestDiffRealStore(t *testing.T) {
	dir := filepath.Join("testdata", "v17-store")
	before, after := mustRead(t, filepath.Join(dir, "before.index")), mustRead(t, filepath.Join(dir, "after.index"))
	mh, err := ParseMailboxHeader("after.header", mustRead(t, filepath.Join(dir, "after.header")))
	if err != nil {
		t.Fatal(err)
	}
	b, err := DiffFiles(dir, before, after, MailboxInfo{UniqueID: mh.UniqueID, UserFlags: mh.UserFlags})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Records) != 1 || b.Records[0].UID != 3 || b.Records[0].SystemFlags&FlagSeen == 0 ||
		b.Records[0].ModSeq != b.HighestModSeq || b.HighestModSeq != b.OldHighestModSeq+1 || b.Repack {
		t.Fatalf("batch %+v", b)
	}
	// The same change applied to the old index reproduces Cyrus's records and counts.
	res, err := Apply("before", before, mh, b)
	if err != nil || res.Applied != 1 || res.Diverged {
		t.Fatalf("%+v %v", res, err)
	}
	got, _ := DecodeIndex("applied", applyWrites(before, res.Writes))
	want, _ := DecodeIndex("after", after)
	if got.Header.SyncCRCBasic != want.Header.SyncCRCBasic || got.Header.Unseen != want.Header.Unseen ||
		got.Header.HighestModSeq != want.Header.HighestModSeq {
		t.Fatalf("applied header %+v\nwant %+v", got.Header, want.Header)
	}
	for i := range want.Records {
		w, g := want.Records[i], got.Records[i]
		if w.UID != g.UID || w.SystemFlags != g.SystemFlags || w.ModSeq != g.ModSeq || w.UserFlags != g.UserFlags {
			t.Fatalf("record %d: %+v vs %+v", i, g, w)
		}
	}
}

// TestDiffRealRepack diffs across a real cyr_expire -X 0 repack: positions
// move, so records are matched by UID, and no live record yields a delta.
func TestDiffRealRepack(t *testing.T) {
	dir := filepath.Join("testdata", "v17-repack")
	before, after := mustRead(t, filepath.Join(dir, "before.index")), mustRead(t, filepath.Join(dir, "after.index"))
	mh, _ := ParseMailboxHeader("h", mustRead(t, filepath.Join(dir, "after.header")))
	b, err := DiffFiles(dir, before, after, MailboxInfo{UniqueID: mh.UniqueID, UserFlags: mh.UserFlags})
	if err != nil {
		t.Fatal(err)
	}
	if !b.Repack || len(b.Records) != 0 {
		t.Fatalf("repack batch %+v", b)
	}
	if _, ok := b.HeaderValue("generation"); !ok {
		t.Fatal("generation change not reported")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
