package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.yaml.in/yaml/v3"
)

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error {
	*m = append(*m, v)
	return nil
}

// daemonFlags are the flags every daemon has.
type daemonFlags struct {
	config      string
	logLevel    string
	metricsAddr string
}

func (d *daemonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.config, "config", "", "YAML file holding any of these flags by name (flags on the command line win)")
	fs.StringVar(&d.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&d.metricsAddr, "metrics-addr", "", "serve Prometheus /metrics and /status on this address (e.g. 127.0.0.1:9464)")
}

// parseDaemonFlags parses args, then fills every flag not given on the
// command line from the YAML file named by --config. Keys are flag names;
// a list sets a repeatable flag once per element.
func parseDaemonFlags(fs *flag.FlagSet, d *daemonFlags, args []string) ([]string, error) {
	pos, err := parseFlags(fs, args)
	if err != nil || d.config == "" {
		return pos, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	raw, err := os.ReadFile(d.config)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("config %s: %w", d.config, err)
	}
	var errs []error
	for k, v := range m {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			errs = append(errs, fmt.Errorf("config %s: unknown key %q", d.config, k))
			continue
		}
		if set[k] {
			continue
		}
		vals := []any{v}
		if l, ok := v.([]any); ok {
			vals = l
		}
		for _, x := range vals {
			if err := fs.Set(k, fmt.Sprint(x)); err != nil {
				errs = append(errs, fmt.Errorf("config %s: %s: %w", d.config, k, err))
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", errUsage, errors.Join(errs...))
	}
	return pos, nil
}

// checkAddr checks a --flag address is an IP literal with a port: host
// names are refused, so nothing is ever looked up or sent anywhere but
// where the operator said.
func checkAddr(flagName, addr string) error {
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return fmt.Errorf("%w: --%s %q: want IP:PORT, e.g. 127.0.0.1:9464", errUsage, flagName, addr)
	}
	return nil
}

// newLogger builds the daemons' structured logger (JSON lines on stderr).
func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("%w: --log-level: %v", errUsage, err)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Sampling = nil
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg.Build()
}
