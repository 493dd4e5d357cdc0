package cyrustest

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestParseMbexamineFixtures parses the mbexamine output that real Cyrus
// wrote for diff/testdata and checks it against the raw index header bytes
// and the IMAP FETCH taken at the same time.
func TestParseMbexamineFixtures(t *testing.T) {
	dirs, _ := filepath.Glob("../../diff/testdata/v1[2-7]")
	dirs = append(dirs, "../../diff/testdata/v17-repack")
	if len(dirs) < 7 {
		t.Fatalf("found %d fixture dirs, want v12..v17 and v17-repack: %v", len(dirs), dirs)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			text, err := os.ReadFile(filepath.Join(dir, "mbexamine.txt"))
			if err != nil {
				t.Fatal(err)
			}
			ex, err := ParseMbexamine(string(text))
			if err != nil {
				t.Fatal(err)
			}
			idxName := "cyrus.index"
			if filepath.Base(dir) == "v17-repack" {
				idxName = "after.index"
			}
			idx, err := os.ReadFile(filepath.Join(dir, idxName))
			if err != nil {
				t.Fatal(err)
			}
			u32 := func(off int) uint32 { return binary.BigEndian.Uint32(idx[off:]) }
			checks := []struct {
				name      string
				got, want uint64
			}{
				{"generation", uint64(ex.Generation), uint64(u32(0))},
				{"minor version", uint64(ex.MinorVersion), uint64(u32(8))},
				{"header size", uint64(ex.HeaderSize), uint64(u32(12))},
				{"record size", uint64(ex.RecordSize), uint64(u32(16))},
				{"last uid", uint64(ex.LastUID), uint64(u32(28))},
				{"mailbox size", ex.MailboxSize, binary.BigEndian.Uint64(idx[32:])},
				{"uidvalidity", uint64(ex.UIDValidity), uint64(u32(44))},
				{"deleted", uint64(ex.Deleted), uint64(u32(48))},
				{"answered", uint64(ex.Answered), uint64(u32(52))},
				{"flagged", uint64(ex.Flagged), uint64(u32(56))},
				{"highestmodseq", ex.HighestModSeq, binary.BigEndian.Uint64(idx[68:])},
				{"exists", uint64(ex.Exists), uint64(u32(84))},
				{"records", uint64(len(ex.Records)), uint64(u32(84))},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s: mbexamine %d, index %d", c.name, c.got, c.want)
				}
			}
			if !slices.Equal(ex.UserFlagNames, []string{"$Label1", "work"}) {
				t.Errorf("user flags %q", ex.UserFlagNames)
			}
			if len(ex.UniqueID) == 0 || ex.Options[0] != "POP3_NEW_UIDL" {
				t.Errorf("unique id %q options %v", ex.UniqueID, ex.Options)
			}
			var fetch []Message
			b, err := os.ReadFile(filepath.Join(dir, "fetch.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &fetch); err != nil {
				t.Fatal(err)
			}
			if len(fetch) != len(ex.Records) {
				t.Fatalf("fetch.json has %d messages, mbexamine %d", len(fetch), len(ex.Records))
			}
			for i, m := range fetch {
				r := &ex.Records[i]
				fl, err := ex.Flags(r)
				if err != nil {
					t.Fatal(err)
				}
				want := slices.Clone(m.Flags)
				sort.Strings(want)
				if r.UID != m.UID || r.ModSeq != m.ModSeq || !slices.Equal(fl, want) {
					t.Errorf("record %d: mbexamine uid %d modseq %d %v, FETCH %+v", i, r.UID, r.ModSeq, fl, m)
				}
				if len(r.GUID) != 40 || r.Size == 0 || r.CacheVersion == 0 {
					t.Errorf("uid %d: guid %q size %d cachever %d", r.UID, r.GUID, r.Size, r.CacheVersion)
				}
				if (ex.MinorVersion < 15) != (r.SaveDate == 0) {
					t.Errorf("uid %d: savedate %d at version %d", r.UID, r.SaveDate, ex.MinorVersion)
				}
			}
		})
	}
}

func TestParseMbexamineErrors(t *testing.T) {
	good, err := os.ReadFile("../../diff/testdata/v17/mbexamine.txt")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseMbexamine(string(good)); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{
		"empty":          "",
		"no records hdr": "Examining user/alice... Mailbox Header Info:\n",
		"truncated":      string(good[:len(good)/2]) + "\n      > USERFLAGS: 00000000\n",
		"bad guid":       strings.Replace(string(good), "GUID:", "GUID:zz", 1),
		"bad modseq":     strings.Replace(string(good), "MODSEQ:", "MODSEQ:x", 1),
	} {
		if _, err := ParseMbexamine(text); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
