package link

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/indexwire/indexwire/diff"
)

func TestReadFrame(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 300)
	tests := []struct {
		name    string
		in      []byte
		max     int
		want    Frame
		wantErr error
		errText string
	}{
		{name: "empty ping", in: []byte{4, 0}, max: 16, want: Frame{Type: FramePing, Payload: []byte{}}},
		{name: "small ack", in: []byte{3, 2, 0xaa, 0xbb}, max: 16, want: Frame{Type: FrameAck, Payload: []byte{0xaa, 0xbb}}},
		{name: "two-byte length", in: AppendFrame(nil, FrameBatch, big), max: 300, want: Frame{Type: FrameBatch, Payload: big}},
		{name: "clean end", in: nil, max: 16, wantErr: io.EOF},
		{name: "unknown type 0", in: []byte{0, 0}, max: 16, wantErr: ErrUnknownFrame, errText: "type(0)"},
		{name: "unknown type 9", in: []byte{9, 1, 1}, max: 16, wantErr: ErrUnknownFrame},
		{name: "over max", in: AppendFrame(nil, FrameBatch, big), max: 299, wantErr: ErrFrameTooLarge, errText: "300 bytes, max 299"},
		{name: "length over 4 bytes", in: []byte{2, 0x80, 0x80, 0x80, 0x80, 1}, max: MaxMaxFrame, wantErr: ErrFrameTooLarge},
		{name: "non-minimal length", in: []byte{2, 0x81, 0x00, 1}, max: 16, wantErr: ErrMalformed},
		{name: "no length", in: []byte{2}, max: 16, wantErr: ErrTruncated},
		{name: "cut length", in: []byte{2, 0x80}, max: 16, wantErr: ErrTruncated},
		{name: "cut payload", in: []byte{2, 10, 1, 2, 3}, max: 16, wantErr: ErrTruncated, errText: "got 3 of 10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ReadFrame(bytes.NewReader(tt.in), tt.max)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err %q does not mention %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Type != tt.want.Type || !bytes.Equal(f.Payload, tt.want.Payload) {
				t.Fatalf("got %v %x, want %v %x", f.Type, f.Payload, tt.want.Type, tt.want.Payload)
			}
		})
	}
}

func TestFrameSize(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 16383, 16384, 1 << 20, 1<<21 - 1, 1 << 21} {
		if got, want := FrameSize(n), len(AppendFrame(nil, FrameBatch, make([]byte, n))); got != want {
			t.Errorf("FrameSize(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestReadFrameSequence(t *testing.T) {
	var buf []byte
	buf = AppendFrame(buf, FrameHello, AppendHello(nil, &Hello{MaxFrame: DefaultMaxFrame}))
	buf = AppendFrame(buf, FramePing, AppendPing(nil, 300))
	r := bytes.NewReader(buf)
	f, err := ReadFrame(r, DefaultMaxFrame)
	if err != nil || f.Type != FrameHello {
		t.Fatalf("first frame %v, %v", f.Type, err)
	}
	f, err = ReadFrame(r, DefaultMaxFrame)
	if err != nil || f.Type != FramePing {
		t.Fatalf("second frame %v, %v", f.Type, err)
	}
	if seq, err := DecodePing(f.Payload); err != nil || seq != 300 {
		t.Fatalf("ping seq %d, %v", seq, err)
	}
	if _, err := ReadFrame(r, DefaultMaxFrame); err != io.EOF {
		t.Fatalf("after last frame: %v, want io.EOF", err)
	}
}

func TestHelloRoundTrip(t *testing.T) {
	h := &Hello{MaxFrame: 4096, More: true, States: []diff.MailboxState{
		{Mailbox: "a1b2c3", UIDValidity: 1700000000, HighestModSeq: 1 << 40, SyncCRC: 0xdeadbeef},
		{Mailbox: "x", UIDValidity: 1, HighestModSeq: 0, SyncCRC: 0},
	}}
	got, err := DecodeHello(AppendHello(nil, h))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, h) {
		t.Fatalf("got %+v, want %+v", got, h)
	}
	empty, err := DecodeHello(AppendHello(nil, &Hello{MaxFrame: DefaultMaxFrame}))
	if err != nil || empty.MaxFrame != DefaultMaxFrame || empty.More || len(empty.States) != 0 {
		t.Fatalf("empty hello: %+v, %v", empty, err)
	}
}

func TestDecodeHelloMalformed(t *testing.T) {
	good := AppendHello(nil, &Hello{MaxFrame: 4096, States: []diff.MailboxState{{Mailbox: "mb1", UIDValidity: 5, HighestModSeq: 9, SyncCRC: 1}}})
	bad := func(f func(p []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name, errText string
		p             []byte
	}{
		{"empty", "version", nil},
		{"version 2", "protocol version 2", bad(func(p []byte) []byte { p[0] = 2; return p })},
		{"unknown flag", "flags", bad(func(p []byte) []byte { p[1] = 0x80; return p })},
		{"max frame too small", "max frame", AppendHello(nil, &Hello{MaxFrame: 10})},
		{"path in mailbox", "mailbox", AppendHello(nil, &Hello{MaxFrame: 4096, States: []diff.MailboxState{{Mailbox: "../etc"}}})},
		{"dot mailbox", "mailbox", AppendHello(nil, &Hello{MaxFrame: 4096, States: []diff.MailboxState{{Mailbox: ".."}}})},
		{"truncated crc", "synccrc", good[:len(good)-1]},
		{"trailing byte", "trailing", append(append([]byte(nil), good...), 0)},
		{"huge count", "state count", append(AppendHello(nil, &Hello{MaxFrame: 4096})[:len(AppendHello(nil, &Hello{MaxFrame: 4096}))-1], 0xff, 0xff, 0xff, 0x7f)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeHello(tt.p)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("err = %v, want ErrMalformed mentioning %q", err, tt.errText)
			}
		})
	}
}

func TestAckRoundTrip(t *testing.T) {
	for _, a := range []Ack{
		{},
		{Applied: 3, Stale: 1, Missing: 2, GUIDMismatch: 4, HighestModSeq: 123456789, Diverged: true},
		{Error: "mailbox locked"},
	} {
		got, err := DecodeAck(AppendAck(nil, &a))
		if err != nil {
			t.Fatal(err)
		}
		if *got != a {
			t.Fatalf("got %+v, want %+v", *got, a)
		}
	}
	long := Ack{Error: strings.Repeat("e", 2000)}
	got, err := DecodeAck(AppendAck(nil, &long))
	if err != nil || len(got.Error) != maxErrorText {
		t.Fatalf("long error: len %d, %v", len(got.Error), err)
	}
	for name, p := range map[string][]byte{
		"empty":        nil,
		"unknown flag": {4, 0, 0, 0, 0, 0, 0},
		"cut":          {0, 1, 2},
		"error length": {0, 0, 0, 0, 0, 0, 5, 'a'},
		"trailing":     {0, 0, 0, 0, 0, 0, 0, 0},
	} {
		if _, err := DecodeAck(p); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestHelloPayloadsSplit(t *testing.T) {
	var states []diff.MailboxState
	for i := range 200 {
		states = append(states, diff.MailboxState{Mailbox: strings.Repeat("m", 30) + string(rune('a'+i%26)), UIDValidity: uint32(i), HighestModSeq: uint64(i) << 20})
	}
	ps := helloPayloads(states, DefaultMaxFrame, MinMaxFrame)
	if len(ps) < 2 {
		t.Fatalf("200 states in %d payloads of at most %d bytes", len(ps), MinMaxFrame)
	}
	var got []diff.MailboxState
	for i, p := range ps {
		if len(p) > MinMaxFrame {
			t.Fatalf("payload %d is %d bytes, max %d", i, len(p), MinMaxFrame)
		}
		h, err := DecodeHello(p)
		if err != nil {
			t.Fatal(err)
		}
		if h.More != (i < len(ps)-1) {
			t.Fatalf("payload %d of %d: More = %v", i, len(ps), h.More)
		}
		got = append(got, h.States...)
	}
	if !reflect.DeepEqual(got, states) {
		t.Fatalf("states differ after split: %d vs %d", len(got), len(states))
	}
	if ps := helloPayloads(nil, DefaultMaxFrame, DefaultMaxFrame); len(ps) != 1 {
		t.Fatalf("no states: %d payloads, want 1", len(ps))
	}
}

// FuzzReadFrame reads frames until an error and decodes each payload by its
// type; nothing may panic, a decoded frame must re-encode to the bytes read,
// and decoded messages must round-trip.
func FuzzReadFrame(f *testing.F) {
	f.Add(AppendFrame(nil, FramePing, AppendPing(nil, 1)))
	f.Add(AppendFrame(nil, FrameHello, AppendHello(nil, &Hello{MaxFrame: 4096, States: []diff.MailboxState{{Mailbox: "mb", UIDValidity: 1, HighestModSeq: 2, SyncCRC: 3}}})))
	f.Add(AppendFrame(nil, FrameAck, AppendAck(nil, &Ack{Applied: 1, HighestModSeq: 9, Error: "x"})))
	f.Add([]byte{2, 0x80, 0x80, 0x80, 0x80, 1})
	f.Add([]byte{2, 10, 1, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for {
			start := len(in) - r.Len()
			fr, err := ReadFrame(r, 4096)
			if err != nil {
				if len(fr.Payload) != 0 {
					t.Fatal("payload returned with error")
				}
				return
			}
			if len(fr.Payload) > 4096 {
				t.Fatalf("payload %d bytes over max", len(fr.Payload))
			}
			end := len(in) - r.Len()
			if !bytes.Equal(AppendFrame(nil, fr.Type, fr.Payload), in[start:end]) {
				t.Fatalf("frame at %d does not re-encode to its bytes", start)
			}
			switch fr.Type {
			case FrameHello:
				if h, err := DecodeHello(fr.Payload); err == nil {
					if h2, err := DecodeHello(AppendHello(nil, h)); err != nil || !reflect.DeepEqual(h, h2) {
						t.Fatalf("hello does not round-trip: %v", err)
					}
				}
			case FrameAck:
				if a, err := DecodeAck(fr.Payload); err == nil {
					if a2, err := DecodeAck(AppendAck(nil, a)); err != nil || *a2 != *a {
						t.Fatalf("ack does not round-trip: %v", err)
					}
				}
			case FramePing, FramePong:
				if s, err := DecodePing(fr.Payload); err == nil {
					if s2, err := DecodePing(AppendPing(nil, s)); err != nil || s2 != s {
						t.Fatalf("ping does not round-trip: %v", err)
					}
				}
			case FrameBatch:
				if b, err := diff.DecodeBatch(fr.Payload); err == nil {
					p, err := diff.EncodeBatch(b)
					if err != nil {
						t.Fatalf("decoded batch does not encode: %v", err)
					}
					if b2, err := diff.DecodeBatch(p); err != nil || !b.Equal(b2) {
						t.Fatalf("batch does not round-trip: %v", err)
					}
				}
			}
		}
	})
}
