package main

import (
	"context"
	"fmt"
	"io"

	"github.com/indexwire/indexwire/net/link"
)

func init() {
	register(command{"keygen", "write a key pair for the QUIC link and print its fingerprint", runKeygen})
}

func runKeygen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keygen", stderr)
	dir := fs.String("dir", "", "directory for key.pem and cert.pem (created; existing keys are never overwritten)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: indexwire keygen --dir DIR\n\nWrites an Ed25519 key and a self-signed certificate and prints the certificate's\nSHA-256 fingerprint; give it to the peer as --peer-cert-sha256.")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *dir == "" || len(pos) != 0 {
		return fmt.Errorf("%w: want --dir DIR and no arguments", errUsage)
	}
	fp, err := link.GenerateKey(*dir)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, fp)
	return nil
}
