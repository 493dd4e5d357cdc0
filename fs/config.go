package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
)

// DefaultCacheTimeout is how long the kernel may cache entries, attributes
// and negative lookups. Long, because every change comes through the mount.
const DefaultCacheTimeout = time.Hour

// Config configures one overlay mount.
type Config struct {
	// Backing is the directory served through the mount. Empty means in
	// place: the mountpoint directory itself, opened before mounting.
	Backing string
	// Mountpoint is the directory the overlay is mounted on. Required.
	Mountpoint string
	// Sink receives one batch per commit. Nil discards batches (writes are
	// still served).
	Sink Sink
	// Logger gets structured logs. Nil means no logs.
	Logger *zap.Logger
	// Debug logs every FUSE request (go-fuse debug output, very verbose).
	Debug bool
	// CacheTimeout is the kernel's entry, attribute and negative lookup
	// timeout. Zero means DefaultCacheTimeout.
	CacheTimeout time.Duration
	// NoPassthrough turns kernel passthrough off for the whole mount, so
	// every file is served by the daemon (slower; for comparison).
	NoPassthrough bool
	// NoOpen is for a metapartition mount: every file is served by the
	// daemon without kernel passthrough, and the kernel sends no OPEN,
	// RELEASE or FLUSH (one round trip fewer per open and per close).
	// Writes of a handle closed without fsync are then committed with the
	// next commit instead of at close (noopen.go). The daemon keeps one
	// descriptor per file read or written (two per mailbox) until the
	// kernel forgets the inode. Needs a kernel offering
	// FUSE_NO_OPEN_SUPPORT (Mount fails otherwise). Off by default.
	NoOpen bool
}

// InPlace reports whether the overlay is mounted over its own backing
// directory.
func (c *Config) InPlace() bool { return c.Backing == "" }

// validate checks c and fills defaults. It does not look at mounts.
func (c *Config) validate() error {
	if c.Mountpoint == "" {
		return errors.New("mountpoint is required")
	}
	mp, err := filepath.Abs(c.Mountpoint)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", c.Mountpoint, err)
	}
	c.Mountpoint = filepath.Clean(mp)
	if c.Backing != "" {
		b, err := filepath.Abs(c.Backing)
		if err != nil {
			return fmt.Errorf("backing directory %s: %w", c.Backing, err)
		}
		c.Backing = filepath.Clean(b)
		st, err := os.Stat(c.Backing)
		if err != nil {
			return fmt.Errorf("backing directory: %w", err)
		}
		if !st.IsDir() {
			return fmt.Errorf("backing %s is not a directory", c.Backing)
		}
		if c.Backing == c.Mountpoint {
			return fmt.Errorf("backing %s equals the mountpoint; leave backing empty to mount in place", c.Backing)
		}
		if rel, err := filepath.Rel(c.Backing, c.Mountpoint); err == nil && rel != ".." && !filepath.IsAbs(rel) && (len(rel) < 3 || rel[:3] != "../") {
			return fmt.Errorf("mountpoint %s is inside backing %s", c.Mountpoint, c.Backing)
		}
	}
	if c.CacheTimeout < 0 {
		return fmt.Errorf("cache timeout %v is negative", c.CacheTimeout)
	}
	if c.CacheTimeout == 0 {
		c.CacheTimeout = DefaultCacheTimeout
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Sink == nil {
		c.Sink = discardSink{}
	}
	return nil
}
