package link

import (
	"bytes"
	"testing"

	"github.com/indexwire/indexwire/diff"
)

// FuzzDecodeHello: any payload either decodes to a Hello that encodes back
// to an equivalent Hello, or is refused with an error; never a panic.
func FuzzDecodeHello(f *testing.F) {
	f.Add(AppendHello(nil, &Hello{MaxFrame: DefaultMaxFrame}))
	f.Add(AppendHello(nil, &Hello{MaxFrame: 4096, More: true, States: []diff.MailboxState{
		{Mailbox: "8iewv5rgkc8cd7c4l4843u64", UIDValidity: 1796312666, HighestModSeq: 42, SyncCRC: 0xe9877ca1},
		{Mailbox: "f4fca4c0-fc1d-4c57-a250-23acb743f93b", UIDValidity: 1, HighestModSeq: 2}}}))
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := DecodeHello(p)
		if err != nil {
			return
		}
		for _, s := range h.States {
			if diff.ValidUniqueID(s.Mailbox) != nil {
				t.Fatalf("decoded an invalid mailbox id %q", s.Mailbox)
			}
		}
		h2, err := DecodeHello(AppendHello(nil, h))
		if err != nil || h2.MaxFrame != h.MaxFrame || h2.More != h.More || len(h2.States) != len(h.States) {
			t.Fatalf("re-encoded Hello differs: %+v vs %+v (%v)", h2, h, err)
		}
	})
}

// FuzzDecodeAck: the same for acks.
func FuzzDecodeAck(f *testing.F) {
	f.Add(AppendAck(nil, &Ack{Applied: 1, HighestModSeq: 43}))
	f.Add(AppendAck(nil, &Ack{Stale: 3, Missing: 1, GUIDMismatch: 2, Diverged: true, Error: "decode batch: truncated"}))
	f.Fuzz(func(t *testing.T, p []byte) {
		a, err := DecodeAck(p)
		if err != nil {
			return
		}
		if b := AppendAck(nil, a); !bytes.Equal(b, AppendAck(nil, mustAck(t, b))) {
			t.Fatalf("ack encoding is not stable: %+v", a)
		}
	})
}

func mustAck(t *testing.T, p []byte) *Ack {
	t.Helper()
	a, err := DecodeAck(p)
	if err != nil {
		t.Fatalf("re-encoded ack does not decode: %v", err)
	}
	return a
}
