package cyrustest

import (
	"bufio"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseTokensLiteral(t *testing.T) {
	raw := []byte("12 FETCH (UID 40 FLAGS (\\Seen $Label1) MODSEQ (77) BODY[HEADER.FIELDS (SUBJECT)] {9}\r\nab)c\"\r\n{x X-EXTRA \"q\\\"s\")")
	toks, err := parseTokens(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := []any{Atom("12"), Atom("FETCH"), []any{
		Atom("UID"), Atom("40"), Atom("FLAGS"), []any{Atom(`\Seen`), Atom("$Label1")},
		Atom("MODSEQ"), []any{Atom("77")},
		Atom("BODY[HEADER.FIELDS (SUBJECT)]"), "ab)c\"\r\n{x", Atom("X-EXTRA"), `q"s`,
	}}
	if !reflect.DeepEqual(toks, want) {
		t.Fatalf("tokens\n got %#v\nwant %#v", toks, want)
	}
	m, err := parseFetch(raw)
	if err != nil {
		t.Fatal(err)
	}
	if m.UID != 40 || m.ModSeq != 77 || !reflect.DeepEqual(m.Flags, []string{`\Seen`, "$Label1"}) {
		t.Fatalf("parseFetch = %+v", m)
	}
}

func TestParseTokensErrors(t *testing.T) {
	for _, in := range []string{"(a b", "\"open", "{5}\r\nab", "{z}\r\n", "a ) b"} {
		if _, err := parseTokens([]byte(in)); err == nil {
			t.Errorf("parseTokens(%q): no error", in)
		}
	}
	if _, err := parseFetch([]byte("1 FETCH (UID x)")); err == nil {
		t.Error("parseFetch accepted UID x")
	}
}

// TestReadResponseLiteral feeds a response whose literal contains CRLF and
// a fake tagged line; the client must not end the response inside it.
func TestReadResponseLiteral(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	c := &Client{conn: cli, r: bufio.NewReader(cli), w: bufio.NewWriter(cli)}
	go func() {
		r := bufio.NewReader(srv)
		r.ReadString('\n') // a1 UID FETCH ...
		lit := "x\r\na1 OK fake\r\n"
		srv.Write([]byte("* 1 FETCH (UID 5 FLAGS (\\Seen) BODY[] {" + strconv.Itoa(len(lit)) + "}\r\n" + lit + " MODSEQ (9))\r\na1 OK done\r\n"))
	}()
	ms, err := c.Fetch("5")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].UID != 5 || ms[0].ModSeq != 9 || !reflect.DeepEqual(ms[0].Flags, []string{`\Seen`}) {
		t.Fatalf("Fetch = %+v", ms)
	}
}

func TestRespCodeAndUIDSet(t *testing.T) {
	n, a := respCode([]byte("[APPENDUID 1796312666 1:3,7] Completed"))
	if n != "APPENDUID" || a != "1796312666 1:3,7" {
		t.Fatalf("respCode = %q %q", n, a)
	}
	if n, a = respCode([]byte("OK [HIGHESTMODSEQ 42] Ok")); n != "HIGHESTMODSEQ" || a != "42" {
		t.Fatalf("respCode = %q %q", n, a)
	}
	u, err := ParseUIDSet("1:3,7,9:8")
	if err != nil || !reflect.DeepEqual(u, []uint32{1, 2, 3, 7, 8, 9}) {
		t.Fatalf("ParseUIDSet = %v %v", u, err)
	}
	if _, err := ParseUIDSet("1:*"); err == nil {
		t.Fatal("ParseUIDSet accepted *")
	}
	if n, ok := literalAtEnd([]byte("* 1 FETCH (BODY[] {123+}\r\n")); !ok || n != 123 {
		t.Fatalf("literalAtEnd = %d %v", n, ok)
	}
	if _, ok := literalAtEnd([]byte("a1 OK {not}\r\n")); ok {
		t.Fatal("literalAtEnd accepted {not}")
	}
}

func TestSynthMessageDeterministic(t *testing.T) {
	a, da := SynthMessage(3)
	b, db := SynthMessage(3)
	c, _ := SynthMessage(4)
	if string(a) != string(b) || !da.Equal(db) || string(a) == string(c) {
		t.Fatal("SynthMessage is not a deterministic function of n")
	}
	if !strings.Contains(string(a), "\r\n\r\n") || strings.Contains(strings.ReplaceAll(string(a), "\r\n", ""), "\n") {
		t.Fatal("SynthMessage must use CRLF line ends only")
	}
}
