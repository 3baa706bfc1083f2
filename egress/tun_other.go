//go:build !linux

package egress

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"

	"ocgate/protocol/datapath"
)

var errTUNLinuxOnly = errors.New("the tun datapath is available on Linux only")

// LocalOpener opens devices in this process (Linux only).
type LocalOpener struct{}

// OpenDevice fails: no TUN support on this system.
func (LocalOpener) OpenDevice(context.Context, DeviceRequest) (int, string, error) {
	return -1, "", errTUNLinuxOnly
}

// TUN is the kernel-TUN datapath (Linux only).
type TUN struct{}

// NewTUN fails: no TUN support on this system.
func NewTUN(TUNConfig) (*TUN, error) { return nil, errTUNLinuxOnly }

func (*TUN) Attach(*datapath.Session) (datapath.Port, error) { return nil, errTUNLinuxOnly }
func (*TUN) Close() error                                    { return nil }

// HelperConfig bounds what the privileged helper does (Linux only).
type HelperConfig struct {
	Prefix  string
	Local   netip.Addr
	Local6  netip.Addr
	Pool    netip.Prefix
	Pool6   netip.Prefix
	Scripts Scripts
}

// HelperClient is the server process's end of the privileged helper (Linux only).
type HelperClient struct{}

// StartHelper fails: no privileged helper on this system.
func StartHelper([]string, HelperConfig, io.Writer) (*HelperClient, *exec.Cmd, error) {
	return nil, nil, errTUNLinuxOnly
}

// ServeHelper fails: no privileged helper on this system.
func ServeHelper(int, *slog.Logger) error { return errTUNLinuxOnly }

func (*HelperClient) OpenDevice(context.Context, DeviceRequest) (int, string, error) {
	return -1, "", errTUNLinuxOnly
}
func (*HelperClient) RunScript(context.Context, string, []string) error { return errTUNLinuxOnly }
func (*HelperClient) Close() error                                      { return nil }
