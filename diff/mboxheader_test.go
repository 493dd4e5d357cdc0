package diff

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const sharedFixtures = "../../shared/cyrus-lab/fixtures"

func readShared(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sharedFixtures, rel))
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s not present (../shared absent): %v", rel, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseMailboxHeaderShared(t *testing.T) {
	for _, tc := range []struct {
		file   string
		name   string
		id     string
		flags  []string
		legacy bool
	}{
		{"v17/cyrus.header", "user.alice", "8iewv5rgkc8cd7c4l4843u64", []string{"$Label1", "$Forwarded"}, false},
		{"cassandane/v12/cyrus.header", "user.cassandane", "f4fca4c0-fc1d-4c57-a250-23acb743f93b", nil, true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b := readShared(t, tc.file)
			h, err := ParseMailboxHeader(tc.file, b)
			if err != nil {
				t.Fatal(err)
			}
			if h.Name != tc.name || h.UniqueID != tc.id || h.Legacy != tc.legacy || !slices.Equal(h.UserFlags, tc.flags) {
				t.Fatalf("got %+v", h)
			}
			if got := h.Encode(); !bytes.Equal(got, b) {
				t.Fatalf("round trip differs:\n got %q\nwant %q", got, b)
			}
		})
	}
}

func TestMailboxHeaderAddFlag(t *testing.T) {
	h := &MailboxHeader{Name: "user.bob", UniqueID: "abc", ACL: []ACLEntry{{"bob", "lrs"}},
		UserFlags: []string{"$Label1", "", "work"}, Fields: []DlistField{{"T", "e"}}}
	if i, _ := h.AddFlag("WORK"); i != 2 {
		t.Fatalf("existing flag: got %d", i)
	}
	if i, _ := h.AddFlag("new"); i != 1 {
		t.Fatalf("hole: got %d", i)
	}
	if i, _ := h.AddFlag("other"); i != 3 {
		t.Fatalf("append: got %d", i)
	}
	if _, err := h.AddFlag("bad name"); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad name: %v", err)
	}
	want := mailboxHeaderMagic + "%(T e N user.bob I abc A %(bob lrs) U ($Label1 new work other))\n"
	if got := string(h.Encode()); got != want {
		t.Fatalf("got %q want %q", got, want)
	}
	h2, err := ParseMailboxHeader("x", []byte(want))
	if err != nil || !slices.Equal(h2.UserFlags, h.UserFlags) {
		t.Fatalf("reparse: %v %v", h2, err)
	}
}

func TestParseMailboxHeaderErrors(t *testing.T) {
	for _, in := range []string{"", "garbage", mailboxHeaderMagic + "%(N x", mailboxHeaderMagic + "%(N)", mailboxHeaderMagic + "only"} {
		_, err := ParseMailboxHeader("hdr", []byte(in))
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Errorf("%q: want CorruptError, got %v", in, err)
		}
	}
}
