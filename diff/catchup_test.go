package diff

import (
	"bytes"
	"testing"
)

func TestSinceCatchesUp(t *testing.T) {
	replica, mh := v17Primary(t)
	p1, _ := storeLikeCyrus(t, replica, mh.UserFlags, 11, FlagSeen)
	p2, _ := storeLikeCyrus(t, p1, mh.UserFlags, 12, FlagFlagged)
	p3, _ := storeLikeCyrus(t, p2, mh.UserFlags, 6, FlagAnswered)
	pix, _ := DecodeIndex("p", p3)
	mb := MailboxInfo{UniqueID: mh.UniqueID, UserFlags: mh.UserFlags}
	for _, chunk := range []int{0, 1, 2} {
		bs := Since(pix, mb, 29, chunk)
		want := 1
		if chunk > 0 {
			want = (3 + chunk - 1) / chunk
		}
		if len(bs) != want {
			t.Fatalf("chunk %d: %d batches", chunk, len(bs))
		}
		r := replica
		from := uint64(29)
		for i, b := range bs {
			if b.OldHighestModSeq != from || b.Partial != (i < len(bs)-1) {
				t.Fatalf("chunk %d batch %d: old %d partial %v", chunk, i, b.OldHighestModSeq, b.Partial)
			}
			from = b.HighestModSeq
			res, err := Apply("r", r, mh, b)
			if err != nil || res.Diverged {
				t.Fatalf("%+v %v", res, err)
			}
			r = applyWrites(r, res.Writes)
		}
		if !bytes.Equal(r, p3) {
			t.Fatalf("chunk %d: replica differs after catch-up", chunk)
		}
	}
	if bs := Since(pix, mb, pix.Header.HighestModSeq, 0); bs != nil {
		t.Fatalf("up to date replica got %d batches", len(bs))
	}
}
