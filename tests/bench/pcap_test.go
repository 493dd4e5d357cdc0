package main

import (
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pcapFile builds a little-endian Ethernet pcap holding the given packets.
func pcapFile(pkts ...[]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...)
	b = binary.LittleEndian.AppendUint32(b, 128)
	b = binary.LittleEndian.AppendUint32(b, 1)
	for _, p := range pkts {
		b = append(b, make([]byte, 8)...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b
}

// ipv4 builds Ethernet + IPv4 + a transport header; payload bytes are
// declared in the length fields but not captured (as with a small snaplen).
func ipv4(proto byte, src, dst uint16, tcpHdr, payload int) []byte {
	l4 := 8
	if proto == 6 {
		l4 = tcpHdr
	}
	p := make([]byte, 14+20+l4)
	p[12], p[13] = 0x08, 0x00
	ip := p[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+l4+payload))
	ip[9] = proto
	t := ip[20:]
	binary.BigEndian.PutUint16(t[0:], src)
	binary.BigEndian.PutUint16(t[2:], dst)
	if proto == 6 {
		t[12] = byte(tcpHdr/4) << 4
	} else {
		binary.BigEndian.PutUint16(t[4:], uint16(8+payload))
	}
	return p
}

func TestParsePcap(t *testing.T) {
	b := pcapFile(
		ipv4(6, 40000, 2005, 32, 119), // csync request with TCP options
		ipv4(6, 2005, 40000, 32, 46),  // reply
		ipv4(6, 40000, 2005, 32, 0),   // bare ACK
		ipv4(17, 50000, 4433, 0, 120), // QUIC
		ipv4(17, 4433, 50000, 0, 40),
	)
	got, err := parsePcap("synthetic", b)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint16]flowBytes{2005: {165, 3}, 40000: {165, 3}, 4433: {160, 2}, 50000: {160, 2}}
	for port, w := range want {
		if g := got[port]; g == nil || *g != w {
			t.Errorf("port %d: got %+v, want %+v", port, g, w)
		}
	}
	if _, err := parsePcap("short", b[:len(b)-3]); err == nil || !strings.Contains(err.Error(), "runs past the end") {
		t.Errorf("truncated file: %v", err)
	}
	if _, err := parsePcap("magic", append([]byte{1, 2, 3, 4}, b[4:]...)); err == nil {
		t.Error("bad magic accepted")
	}
}

// A real tcpdump capture of a known UDP exchange on lo gives exactly the
// bytes sent.
func TestCaptureCountsLoopbackUDP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for tcpdump")
	}
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump not installed")
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	port := conn.LocalAddr().(*net.UDPAddr).Port
	file := filepath.Join(t.TempDir(), "x.pcap")
	c, err := startCapture(t.Context(), file, "udp port "+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	sender, err := net.Dial("udp", conn.LocalAddr().String())
	if err != nil {
		c.stop()
		t.Fatal(err)
	}
	for _, n := range []int{100, 37, 1200} {
		if _, err := sender.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	sender.Close()
	// tcpdump -U writes each packet as it comes; wait until all three are in
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if f, err := os.Stat(file); err == nil && f.Size() >= 24+3*(16+14+28) {
			break
		}
	}
	c.stop()
	got, err := pcapPayload(file)
	if err != nil {
		t.Fatal(err)
	}
	if f := got[uint16(port)]; f == nil || f.Payload != 1337 || f.Packets != 3 {
		t.Fatalf("port %d: %+v, want 1337 bytes in 3 packets", port, f)
	}
}
