package diff

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// seedFiles adds every cyrus.index (or cyrus.header) under testdata and the
// shared fixtures, when present, to the fuzz corpus.
func seedFiles(f *testing.F, name string) {
	for _, root := range []string{"testdata", sharedFixtures} {
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && d.Name() == name {
				if b, err := os.ReadFile(p); err == nil {
					f.Add(b)
				}
			}
			return nil
		})
	}
}

func FuzzDecodeIndex(f *testing.F) {
	seedFiles(f, "cyrus.index")
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := DecodeIndex("fuzz", b)
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("error without location: %v", err)
			}
			return
		}
		out, err := ix.Encode()
		if err != nil {
			t.Fatal(err)
		}
		n := int(ix.Layout.RecordOffset(len(ix.Records) + 1))
		if !bytes.Equal(out, b[:n]) {
			t.Fatal("decode/encode is not an exact inverse")
		}
		_ = Check("fuzz", ix, nil)
	})
}

func FuzzParseMailboxHeader(f *testing.F) {
	seedFiles(f, "cyrus.header")
	f.Add([]byte(mailboxHeaderMagic + "%(T e N user.x I abc A %(x lrs) U (a NIL \"b c\"))\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseMailboxHeader("fuzz", b)
		if err != nil {
			return
		}
		// Whatever parsed must survive its own encoding.
		h2, err := ParseMailboxHeader("fuzz-reencoded", h.Encode())
		if err != nil {
			t.Fatalf("re-encoded header does not parse: %v\n%q", err, h.Encode())
		}
		if h2.UniqueID != h.UniqueID || len(h2.UserFlags) != len(h.UserFlags) {
			t.Fatalf("re-encoded header differs: %+v vs %+v", h2, h)
		}
	})
}

func FuzzDecodeBatch(f *testing.F) {
	p, _ := EncodeBatch(sampleBatch())
	f.Add(p)
	f.Fuzz(func(t *testing.T, b []byte) {
		bt, err := DecodeBatch(b)
		if err != nil {
			return
		}
		out, err := EncodeBatch(bt)
		if err != nil {
			t.Fatalf("decoded batch does not encode: %v", err)
		}
		bt2, err := DecodeBatch(out)
		if err != nil || !bt2.Equal(bt) {
			t.Fatalf("re-encoded batch differs: %v", err)
		}
	})
}
