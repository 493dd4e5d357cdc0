package cyrustest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BinDir holds the Debian Cyrus binaries (master, imapd, tools).
const BinDir = "/usr/lib/cyrus/bin"

// Password is the SASL password of every user the package creates,
// including the admin.
const Password = "secret"

// Admin is the Cyrus admin user of every instance.
const Admin = "cyrus"

// DefaultStartTimeout bounds how long Launch waits for master to listen.
const DefaultStartTimeout = 15 * time.Second

// DefaultStopTimeout bounds how long Stop waits after SIGTERM before SIGKILL.
const DefaultStopTimeout = 10 * time.Second

// Options configures an instance. The zero value is a usable instance
// named "cyrus" on free ports.
type Options struct {
	// Name names the instance; its lowercased form is the servername and
	// SASL realm. Default "cyrus".
	Name string
	// BaseDir is the parent of the instance directory BaseDir/Name, which
	// Close removes. Default: a fresh directory under /tmp, removed by Close.
	// User cyrus must be able to traverse BaseDir's parents.
	BaseDir string
	// Port is the IMAP port on 127.0.0.1; 0 picks a free port.
	Port int
	// SyncPort is the csync (sync_server) port on 127.0.0.1; 0 picks a free port.
	SyncPort int
	// Partition overrides partition-default (e.g. a FUSE mountpoint). It
	// must exist and its parents be traversable by user cyrus; its top
	// directory is chowned to cyrus:mail. Close leaves it in place.
	Partition string
	// Conf holds extra imapd.conf lines "key: value"; each replaces a
	// default with the same key.
	Conf []string
	// SyncTo, when set, configures this instance as a replication primary
	// pushing to SyncTo's sync_server (see SyncUser).
	SyncTo *Instance
	// Rolling adds a rolling `sync_client -r` under master (needs SyncTo).
	Rolling bool
}

// Instance is one running (or stopped) Cyrus instance.
type Instance struct {
	Name      string // instance name
	Realm     string // servername and SASL realm (lowercased Name)
	Dir       string // instance directory
	Spool     string // partition-default
	ConfigDir string // configdirectory (mailboxes.db, sasldb2, sync/)
	Conf      string // path of imapd.conf
	Port      int    // IMAP port on 127.0.0.1
	SyncPort  int    // sync_server port on 127.0.0.1

	opts      Options
	removeDir string // directory Close removes ("" if the caller owns it)
	cyrus     *syscall.Credential
	syslog    *syslogSink

	mu      sync.Mutex
	master  *exec.Cmd
	exited  chan struct{} // closed when master has been reaped
	waitErr error
}

// Launch writes the configuration of a new instance, starts its master and
// waits until IMAP and csync accept connections. The caller must Close it.
func Launch(ctx context.Context, opts Options) (*Instance, error) {
	if opts.Name == "" {
		opts.Name = "cyrus"
	}
	if strings.ContainsAny(opts.Name, "/ \t\n") {
		return nil, fmt.Errorf("launch: bad instance name %q", opts.Name)
	}
	if opts.Rolling && opts.SyncTo == nil {
		return nil, errors.New("launch: Rolling needs SyncTo")
	}
	cred, err := cyrusCredential()
	if err != nil {
		return nil, fmt.Errorf("launch %s: %w", opts.Name, err)
	}
	in := &Instance{Name: opts.Name, Realm: strings.ToLower(opts.Name), opts: opts, cyrus: cred}
	base := opts.BaseDir
	if base == "" {
		base, err = os.MkdirTemp("/tmp", "cyrustest-")
		if err != nil {
			return nil, fmt.Errorf("launch %s: %w", opts.Name, err)
		}
		in.removeDir = base
	} else {
		in.removeDir = filepath.Join(base, opts.Name)
	}
	// user cyrus must traverse base (MkdirTemp makes it 0700)
	if err := os.Chmod(base, 0o711); err != nil {
		in.cleanupDir()
		return nil, fmt.Errorf("launch %s: %w", opts.Name, err)
	}
	in.Dir = filepath.Join(base, opts.Name)
	in.ConfigDir = filepath.Join(in.Dir, "conf")
	in.Spool = filepath.Join(in.Dir, "spool")
	if opts.Partition != "" {
		in.Spool = opts.Partition
	}
	in.Conf = filepath.Join(in.Dir, "etc", "imapd.conf")
	if in.Port, err = freePort(opts.Port); err != nil {
		in.cleanupDir()
		return nil, fmt.Errorf("launch %s: %w", opts.Name, err)
	}
	if in.SyncPort, err = freePort(opts.SyncPort); err != nil {
		in.cleanupDir()
		return nil, fmt.Errorf("launch %s: %w", opts.Name, err)
	}
	if err := in.setup(); err != nil {
		in.cleanupDir()
		return nil, fmt.Errorf("launch %s: %w", opts.Name, err)
	}
	in.syslog = acquireSyslog()
	if err := in.start(ctx); err != nil {
		in.Close()
		return nil, fmt.Errorf("launch %s: %w", opts.Name, err)
	}
	return in, nil
}

func freePort(p int) (int, error) {
	if p != 0 {
		return p, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func cyrusCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("cyrus")
	if err != nil {
		return nil, fmt.Errorf("look up user cyrus: %w", err)
	}
	g, err := user.LookupGroup("mail")
	if err != nil {
		return nil, fmt.Errorf("look up group mail: %w", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(g.Gid, 10, 32)
	c := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("groups of user cyrus: %w", err)
	}
	for _, s := range ids {
		n, err := strconv.ParseUint(s, 10, 32)
		if err == nil {
			c.Groups = append(c.Groups, uint32(n))
		}
	}
	return c, nil
}

func (in *Instance) cleanupDir() {
	if in.removeDir != "" {
		os.RemoveAll(in.removeDir)
	}
}

// setup creates the directory tree, both config files and the admin's
// sasldb entry, and hands everything to cyrus:mail.
func (in *Instance) setup() error {
	dirs := []string{"etc", "log", "run/proc", "run/lock", "run/socket"}
	for _, d := range []string{"db", "sync", "log", "msg", "user", "quota", "sieve", "socket", "proc", "lock"} {
		dirs = append(dirs, "conf/"+d)
	}
	if in.opts.Partition == "" {
		dirs = append(dirs, "spool")
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(in.Dir, d), 0o750); err != nil {
			return err
		}
	}
	if err := in.writeConfig(); err != nil {
		return err
	}
	if err := in.saslUser(Admin); err != nil {
		return err
	}
	if err := chownTree(in.Dir, in.cyrus); err != nil {
		return err
	}
	if in.opts.Partition != "" {
		if err := os.Chown(in.Spool, int(in.cyrus.Uid), int(in.cyrus.Gid)); err != nil {
			return fmt.Errorf("chown partition: %w", err)
		}
	}
	return nil
}

func chownTree(root string, c *syscall.Credential) error {
	return filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(c.Uid), int(c.Gid))
	})
}

// imapdConf returns the imapd.conf lines: defaults, replication settings,
// then Options.Conf, where a later key replaces an earlier one.
func (in *Instance) imapdConf() []string {
	run := filepath.Join(in.Dir, "run")
	lines := []string{
		"configdirectory: " + in.ConfigDir,
		"defaultpartition: default",
		"partition-default: " + in.Spool,
		"proc_path: " + filepath.Join(run, "proc"),
		"mboxname_lockpath: " + filepath.Join(run, "lock"),
		"lmtpsocket: " + filepath.Join(run, "socket", "lmtp"),
		"idlesocket: " + filepath.Join(run, "socket", "idle"),
		"notifysocket: " + filepath.Join(run, "socket", "notify"),
		"servername: " + in.Realm,
		"syslog_prefix: " + in.syslogPrefix(),
		"admins: " + Admin,
		"allowplaintext: yes",
		"sasl_pwcheck_method: auxprop",
		"sasl_auxprop_plugin: sasldb",
		"sasl_sasldb_path: " + filepath.Join(in.ConfigDir, "sasldb2"),
		"sasl_mech_list: PLAIN LOGIN",
		"unixhierarchysep: yes",
		"altnamespace: yes",
		"hashimapspool: no",
		"umask: 077",
	}
	if r := in.opts.SyncTo; r != nil {
		lines = append(lines,
			"sync_host: 127.0.0.1",
			"sync_port: "+strconv.Itoa(r.SyncPort),
			"sync_try_imap: no",
			"sync_authname: "+Admin,
			"sync_password: "+Password,
		)
		if in.opts.Rolling {
			lines = append(lines, "sync_log: 1")
		}
	}
	lines = append(lines, in.opts.Conf...)
	var out []string
	idx := map[string]int{}
	for _, l := range lines {
		k, _, _ := strings.Cut(l, ":")
		k = strings.TrimSpace(k)
		if i, ok := idx[k]; ok {
			out[i] = l
			continue
		}
		idx[k] = len(out)
		out = append(out, l)
	}
	return out
}

func (in *Instance) syslogPrefix() string { return "cyrustest-" + in.Name }

func (in *Instance) writeConfig() error {
	conf := "# generated by cyrustest for instance " + in.Name + "\n" + strings.Join(in.imapdConf(), "\n") + "\n"
	if err := os.WriteFile(in.Conf, []byte(conf), 0o640); err != nil {
		return err
	}
	c := in.Conf
	var b strings.Builder
	fmt.Fprintf(&b, "# generated by cyrustest for instance %s\n", in.Name)
	fmt.Fprintf(&b, "START {\n  recover cmd=\"ctl_cyrusdb -C %s -r\"\n}\n", c)
	fmt.Fprintf(&b, "SERVICES {\n")
	fmt.Fprintf(&b, "  imap cmd=\"imapd -C %s\" listen=\"127.0.0.1:%d\" prefork=0\n", c, in.Port)
	fmt.Fprintf(&b, "  csync cmd=\"sync_server -C %s\" listen=\"127.0.0.1:%d\" prefork=0\n", c, in.SyncPort)
	fmt.Fprintf(&b, "  lmtp cmd=\"lmtpd -C %s -a\" listen=\"%s\" prefork=0\n}\n", c, filepath.Join(in.Dir, "run", "socket", "lmtp"))
	fmt.Fprintf(&b, "EVENTS {\n  checkpoint cmd=\"ctl_cyrusdb -C %s -c\" period=30\n}\n", c)
	fmt.Fprintf(&b, "DAEMON {\n")
	if in.opts.Rolling {
		fmt.Fprintf(&b, "  syncclient cmd=\"sync_client -C %s -r\"\n", c)
	}
	fmt.Fprintf(&b, "}\n")
	return os.WriteFile(filepath.Join(in.Dir, "etc", "cyrus.conf"), []byte(b.String()), 0o640)
}

// saslUser creates or resets the sasldb entry of user with Password.
func (in *Instance) saslUser(name string) error {
	db := filepath.Join(in.ConfigDir, "sasldb2")
	cmd := exec.Command("saslpasswd2", "-p", "-c", "-f", db, "-u", in.Realm, name)
	cmd.Stdin = strings.NewReader(Password)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("saslpasswd2 %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	if err := os.Chown(db, int(in.cyrus.Uid), int(in.cyrus.Gid)); err != nil {
		return err
	}
	return os.Chmod(db, 0o600)
}

// start runs master in the foreground and waits for both ports.
func (in *Instance) start(ctx context.Context) error {
	logf, err := os.OpenFile(filepath.Join(in.Dir, "log", "master.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	defer logf.Close()
	pidfile := filepath.Join(in.Dir, "run", "master.pid")
	os.Remove(pidfile)
	cmd := exec.Command(filepath.Join(BinDir, "master"), "-C", in.Conf,
		"-M", filepath.Join(in.Dir, "etc", "cyrus.conf"), "-p", pidfile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "TZ=UTC")
	// own process group, so a SIGKILL fallback can reach master's children
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start master: %w", err)
	}
	exited := make(chan struct{})
	in.mu.Lock()
	in.master, in.exited, in.waitErr = cmd, exited, nil
	in.mu.Unlock()
	go func() {
		err := cmd.Wait()
		in.mu.Lock()
		in.waitErr = err
		in.mu.Unlock()
		close(exited)
	}()
	ctx, cancel := context.WithTimeout(ctx, DefaultStartTimeout)
	defer cancel()
	for _, p := range []int{in.Port, in.SyncPort} {
		if err := waitPort(ctx, p, exited); err != nil {
			return fmt.Errorf("master did not come up (see %s and syslog): %w",
				filepath.Join(in.Dir, "log", "master.log"), err)
		}
	}
	return nil
}

func waitPort(ctx context.Context, port int, exited <-chan struct{}) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("master exited")
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", addr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop terminates master (SIGTERM, then SIGKILL to its process group after
// DefaultStopTimeout) and waits for it. Stopping a stopped instance is a no-op.
func (in *Instance) Stop() error {
	in.mu.Lock()
	cmd, exited := in.master, in.exited
	in.master = nil
	in.mu.Unlock()
	if cmd == nil {
		return nil
	}
	pid := cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop %s: %w", in.Name, err)
	}
	select {
	case <-exited:
	case <-time.After(DefaultStopTimeout):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
	}
	// master's children (imapd, sync_client) normally exit with it; kill
	// stragglers still in master's process group
	syscall.Kill(-pid, syscall.SIGKILL)
	return nil
}

// Restart stops master and starts it again with a freshly written
// configuration; mailboxes and users are kept.
func (in *Instance) Restart() error {
	if err := in.Stop(); err != nil {
		return err
	}
	if err := in.writeConfig(); err != nil {
		return fmt.Errorf("restart %s: %w", in.Name, err)
	}
	if err := in.start(context.Background()); err != nil {
		return fmt.Errorf("restart %s: %w", in.Name, err)
	}
	return nil
}

// Running reports whether master is running.
func (in *Instance) Running() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.master == nil {
		return false
	}
	select {
	case <-in.exited:
		return false
	default:
		return true
	}
}

// Close stops the instance, releases the syslog sink and removes the
// instance's directories (only those Launch created).
func (in *Instance) Close() error {
	err := in.Stop()
	if in.syslog != nil {
		releaseSyslog(in.syslog)
		in.syslog = nil
	}
	in.cleanupDir()
	return err
}

// Addr is the IMAP address, 127.0.0.1:Port.
func (in *Instance) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(in.Port))
}

// Tool runs BinDir/<name> -C <imapd.conf> args... as cyrus:mail with TZ=UTC
// and returns its standard output; on failure the error carries stderr.
func (in *Instance) Tool(name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	err := in.runTool(&stdout, &stderr, name, args)
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()+" "+stdout.String()))
	}
	return stdout.String(), nil
}

// ToolCombined is Tool with standard output and standard error
// interleaved in the result (for tools such as cyr_expire -v that report
// on stderr).
func (in *Instance) ToolCombined(name string, args ...string) (string, error) {
	var out bytes.Buffer
	if err := in.runTool(&out, &out, name, args); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err,
			strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func (in *Instance) runTool(stdout, stderr *bytes.Buffer, name string, args []string) error {
	if strings.ContainsRune(name, '/') {
		return fmt.Errorf("not a cyrus tool name")
	}
	cmd := exec.Command(filepath.Join(BinDir, name), append([]string{"-C", in.Conf}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: in.cyrus}
	cmd.Env = []string{"TZ=UTC", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	return cmd.Run()
}

// MkUser creates the sasldb entry of name (password Password) and its
// mailbox user/<name>.
func (in *Instance) MkUser(name string) error {
	if err := in.saslUser(name); err != nil {
		return fmt.Errorf("mkuser %s: %w", name, err)
	}
	c, err := in.Login(Admin)
	if err != nil {
		return fmt.Errorf("mkuser %s: %w", name, err)
	}
	defer c.Close()
	if err := c.Create("user/" + name); err != nil {
		return fmt.Errorf("mkuser %s: %w", name, err)
	}
	return c.Logout()
}

// SetPassword creates the sasldb entry of name only (e.g. on a replica,
// where replication creates the mailbox).
func (in *Instance) SetPassword(name string) error {
	if err := in.saslUser(name); err != nil {
		return fmt.Errorf("set password of %s: %w", name, err)
	}
	return nil
}

// Login dials the instance and logs in as name with Password; CONDSTORE
// is enabled.
func (in *Instance) Login(name string) (*Client, error) {
	c, err := Dial(in.Addr())
	if err != nil {
		return nil, err
	}
	if err := c.Login(name, Password); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// MBPath returns the data directory of mailbox (e.g. "user/alice"), which
// holds cyrus.index and cyrus.header, as reported by `mbpath`.
func (in *Instance) MBPath(mailbox string) (string, error) {
	out, err := in.Tool("mbpath", mailbox)
	if err != nil {
		return "", err
	}
	p := strings.TrimSpace(out)
	if p == "" || strings.Contains(p, "\n") {
		return "", fmt.Errorf("mbpath %s: unexpected output %q", mailbox, out)
	}
	return p, nil
}

// Mbexamine runs `mbexamine mailbox` and parses its output.
func (in *Instance) Mbexamine(mailbox string) (*Examine, error) {
	out, err := in.Tool("mbexamine", mailbox)
	if err != nil {
		return nil, err
	}
	return ParseMbexamine(out)
}

// SyncUser replicates user once with `sync_client -u user` (Options.SyncTo
// must be set) and returns what sync_client printed.
func (in *Instance) SyncUser(name string) (string, error) {
	if in.opts.SyncTo == nil {
		return "", fmt.Errorf("sync %s: instance %s has no SyncTo", name, in.Name)
	}
	return in.Tool("sync_client", "-u", name)
}

// Syslog returns the syslog lines this instance's processes sent so far,
// and false if no in-process sink captures /dev/log (another syslog owns it).
func (in *Instance) Syslog() ([]string, bool) {
	if in.syslog == nil || !in.syslog.owned {
		return nil, false
	}
	return in.syslog.lines(in.syslogPrefix() + "/"), true
}
