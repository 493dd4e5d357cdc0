package cyrustest

import (
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
)

// SyslogPath is where Cyrus (via syslog(3)) sends its log lines.
const SyslogPath = "/dev/log"

// maxSyslogLines bounds the in-memory log of the sink.
const maxSyslogLines = 200000

// syslogSink is the process-wide receiver bound to /dev/log. It is shared
// by all instances of the process and reference counted; the last release
// closes it and removes the socket (only if it is still ours).
type syslogSink struct {
	owned bool // false: /dev/log is served by somebody else
	conn  *net.UnixConn
	ino   uint64
	done  chan struct{}
	refs  int

	mu  sync.Mutex
	buf []string
}

var (
	sinkMu sync.Mutex
	sink   *syslogSink
)

func acquireSyslog() *syslogSink {
	sinkMu.Lock()
	defer sinkMu.Unlock()
	if sink == nil {
		sink = openSyslog()
	}
	sink.refs++
	return sink
}

func releaseSyslog(s *syslogSink) {
	sinkMu.Lock()
	defer sinkMu.Unlock()
	s.refs--
	if s.refs > 0 {
		return
	}
	if s == sink {
		sink = nil
	}
	if !s.owned {
		return
	}
	s.conn.Close()
	<-s.done
	var st syscall.Stat_t
	if syscall.Stat(SyslogPath, &st) == nil && st.Ino == s.ino {
		os.Remove(SyslogPath)
	}
}

// openSyslog binds /dev/log unless a live receiver already serves it; a
// stale socket file (nobody listening) is replaced.
func openSyslog() *syslogSink {
	s := &syslogSink{done: make(chan struct{})}
	if _, err := os.Lstat(SyslogPath); err == nil {
		c, err := net.Dial("unixgram", SyslogPath)
		if err == nil {
			c.Close()
			return s
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return s
		}
		os.Remove(SyslogPath)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: SyslogPath, Net: "unixgram"})
	if err != nil {
		return s
	}
	var st syscall.Stat_t
	if err := syscall.Stat(SyslogPath, &st); err != nil {
		conn.Close()
		return s
	}
	os.Chmod(SyslogPath, 0o666)
	s.owned, s.conn, s.ino = true, conn, st.Ino
	go s.read()
	return s
}

func (s *syslogSink) read() {
	defer close(s.done)
	b := make([]byte, 65536)
	for {
		n, _, err := s.conn.ReadFrom(b)
		if err != nil {
			return
		}
		line := strings.TrimRight(string(b[:n]), "\x00\n")
		s.mu.Lock()
		if len(s.buf) < maxSyslogLines {
			s.buf = append(s.buf, line)
		}
		s.mu.Unlock()
	}
}

// lines returns the captured lines that contain substr.
func (s *syslogSink) lines(substr string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.buf {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}
