package link

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

func TestGenerateAndLoadKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	fp, err := GenerateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(fp) {
		t.Fatalf("fingerprint %q is not 64 lowercase hex digits", fp)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", st.Mode().Perm())
	}
	cert, err := LoadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := CertFingerprint(&cert); got != fp {
		t.Fatalf("loaded fingerprint %s, generated %s", got, fp)
	}
	if got := Fingerprint(cert.Leaf.Raw); got != fp {
		t.Fatalf("leaf fingerprint %s, want %s", got, fp)
	}
	if _, err := GenerateKey(dir); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second GenerateKey: %v, want ErrExist", err)
	}
	if again, _ := LoadKey(dir); CertFingerprint(&again) != fp {
		t.Fatal("refused overwrite changed the key")
	}
	other, err := GenerateKey(t.TempDir())
	if err != nil || other == fp {
		t.Fatalf("second key fingerprint %s (err %v) equals the first", other, err)
	}
}

func TestLoadKeyRefusesOpenMode(t *testing.T) {
	dir := t.TempDir()
	if _, err := GenerateKey(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(dir); err == nil {
		t.Fatal("LoadKey accepted a world-readable key")
	}
	if _, err := LoadKey(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty dir: %v, want ErrNotExist", err)
	}
}

func TestParseFingerprint(t *testing.T) {
	const fp = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	for _, in := range []string{fp, " 00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF ",
		"00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"} {
		if got, err := ParseFingerprint(in); err != nil || got != fp {
			t.Errorf("ParseFingerprint(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", fp[:62], fp + "00", "zz" + fp[2:]} {
		if _, err := ParseFingerprint(in); err == nil {
			t.Errorf("ParseFingerprint(%q) accepted", in)
		}
	}
}
