package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// capture is a running `tcpdump -i lo -w file FILTER`.
type capture struct {
	cmd  *exec.Cmd
	file string
	done chan error
}

// startCapture starts tcpdump on lo and waits until it listens.
func startCapture(ctx context.Context, file, filter string) (*capture, error) {
	cmd := exec.Command("tcpdump", "-i", "lo", "-n", "-s", "128", "-U", "-w", file, filter)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start tcpdump: %w", err)
	}
	c := &capture{cmd: cmd, file: file, done: make(chan error, 1)}
	ready := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stderr)
		var seen strings.Builder
		for {
			line, err := r.ReadString('\n')
			seen.WriteString(line)
			if strings.Contains(line, "listening on") {
				ready <- ""
				io.Copy(io.Discard, r)
				break
			}
			if err != nil {
				ready <- seen.String()
				break
			}
		}
		c.done <- cmd.Wait()
	}()
	select {
	case msg := <-ready:
		if msg != "" {
			return nil, fmt.Errorf("tcpdump did not start: %s", strings.TrimSpace(msg))
		}
	case <-time.After(10 * time.Second):
		c.stop()
		return nil, errors.New("tcpdump did not start in 10s")
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
	return c, nil
}

// stop ends tcpdump with SIGINT (it flushes the file) and waits for it.
func (c *capture) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// flowBytes are the transport payload bytes and packets seen on one port.
type flowBytes struct {
	Payload int64 // TCP or UDP payload bytes, both directions
	Packets int64 // packets carrying the port, including empty TCP ACKs
}

// pcapPayload reads a pcap file (Ethernet or Linux cooked link type,
// IPv4 or IPv6) and sums transport payload bytes per local port: a packet
// is counted once under each of its two ports. Payload lengths come from
// the IP and TCP/UDP headers, so a small snap length is enough.
func pcapPayload(file string) (map[uint16]*flowBytes, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return parsePcap(file, b)
}

func parsePcap(name string, b []byte) (map[uint16]*flowBytes, error) {
	if len(b) < 24 {
		return nil, fmt.Errorf("pcap %s: %d bytes, no global header", name, len(b))
	}
	var bo binary.ByteOrder
	switch m := binary.LittleEndian.Uint32(b); m {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return nil, fmt.Errorf("pcap %s: bad magic %#x", name, m)
	}
	link := bo.Uint32(b[20:]) & 0x0fffffff
	var l2 int
	switch link {
	case 1: // Ethernet
		l2 = 14
	case 113: // Linux cooked (SLL)
		l2 = 16
	case 276: // Linux cooked v2
		l2 = 20
	default:
		return nil, fmt.Errorf("pcap %s: link type %d not supported", name, link)
	}
	out := map[uint16]*flowBytes{}
	add := func(port uint16, payload int) {
		f := out[port]
		if f == nil {
			f = &flowBytes{}
			out[port] = f
		}
		f.Payload += int64(payload)
		f.Packets++
	}
	off := 24
	for off < len(b) {
		if off+16 > len(b) {
			return nil, fmt.Errorf("pcap %s: truncated record header at offset %d", name, off)
		}
		incl := int(bo.Uint32(b[off+8:]))
		off += 16
		if incl > len(b)-off {
			return nil, fmt.Errorf("pcap %s: record of %d bytes at offset %d runs past the end", name, incl, off-16)
		}
		pkt := b[off : off+incl]
		off += incl
		if len(pkt) < l2+1 {
			continue
		}
		ip := pkt[l2:]
		var proto byte
		var l4 []byte
		var l4len int
		switch ip[0] >> 4 {
		case 4:
			if len(ip) < 20 {
				continue
			}
			ihl := int(ip[0]&0x0f) * 4
			total := int(binary.BigEndian.Uint16(ip[2:]))
			if len(ip) < ihl {
				continue
			}
			proto, l4, l4len = ip[9], ip[ihl:], total-ihl
		case 6:
			if len(ip) < 40 {
				continue
			}
			proto, l4, l4len = ip[6], ip[40:], int(binary.BigEndian.Uint16(ip[4:]))
		default:
			continue
		}
		var payload int
		switch proto {
		case 6: // TCP
			if len(l4) < 13 {
				continue
			}
			payload = l4len - int(l4[12]>>4)*4
		case 17: // UDP
			if len(l4) < 8 {
				continue
			}
			payload = int(binary.BigEndian.Uint16(l4[4:])) - 8
		default:
			continue
		}
		if payload < 0 {
			return nil, fmt.Errorf("pcap %s: negative payload in packet before offset %d", name, off)
		}
		src, dst := binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
		add(src, payload)
		if dst != src {
			add(dst, payload)
		}
	}
	return out, nil
}
