package replica

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
)

// DefaultRescanInterval is the least time between two walks of the spool
// made because a mailbox was not found.
const DefaultRescanInterval = 10 * time.Second

// Config configures an Applier. Spool, CyrusConf and StateDir are required.
type Config struct {
	// Spool is the root of the replica's Cyrus partition (partition-default).
	Spool string
	// CyrusConf is the replica's imapd.conf; configdirectory and
	// mboxname_lockpath are read from it to find Cyrus's lock files.
	CyrusConf string
	// StateDir holds the redo files and the replication positions.
	StateDir string
	// Logger receives one line per GUID mismatch, divergence and recovery;
	// nil logs nothing.
	Logger *zap.Logger
	// RescanInterval rate-limits spool walks on a lookup miss;
	// DefaultRescanInterval if zero.
	RescanInterval time.Duration
}

// Validate checks that the directories exist and that the Cyrus
// configuration names a configdirectory.
func (c *Config) Validate() error {
	var errs []error
	dir := func(name, p string) {
		if p == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
			return
		}
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s %q: must be an absolute path", name, p))
			return
		}
		fi, err := os.Stat(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		} else if !fi.IsDir() {
			errs = append(errs, fmt.Errorf("%s %s: not a directory", name, p))
		}
	}
	dir("spool", c.Spool)
	dir("state dir", c.StateDir)
	if c.CyrusConf == "" {
		errs = append(errs, errors.New("cyrus conf is required"))
	} else if _, err := LockDir(c.CyrusConf); err != nil {
		errs = append(errs, err)
	}
	if c.RescanInterval < 0 {
		errs = append(errs, fmt.Errorf("rescan interval %v: must not be negative", c.RescanInterval))
	}
	return errors.Join(errs...)
}

// LockDir returns the directory holding Cyrus's mailbox lock files, as the
// imapd.conf at path configures it: mboxname_lockpath if set, else
// <configdirectory>/lock (mboxname_lock() in Cyrus 3.6).
func LockDir(path string) (string, error) {
	conf, err := readImapdConf(path)
	if err != nil {
		return "", err
	}
	if p := conf["mboxname_lockpath"]; p != "" {
		return p, nil
	}
	cd := conf["configdirectory"]
	if cd == "" {
		return "", fmt.Errorf("cyrus conf %s: no configdirectory", path)
	}
	if !filepath.IsAbs(cd) {
		return "", fmt.Errorf("cyrus conf %s: configdirectory %q is not absolute", path, cd)
	}
	return filepath.Join(cd, "lock"), nil
}

// readImapdConf reads "key: value" lines; '#' starts a comment line.
func readImapdConf(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cyrus conf: %w", err)
	}
	defer f.Close()
	conf := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("cyrus conf %s:%d: no ':' in %q", path, n, line)
		}
		conf[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cyrus conf %s: %w", path, err)
	}
	return conf, nil
}
