package main

import (
	"net"
	"os"
)

// sdNotify tells systemd the daemon's state (e.g. "READY=1") when it runs
// as a Type=notify unit; without NOTIFY_SOCKET it does nothing. With it,
// units ordered After= the mount start only once the overlay is live.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
