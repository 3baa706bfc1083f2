//go:build !linux

package privsep

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os/exec"

	"ocgate/egress/tun"
)

var errLinuxOnly = errors.New("the privileged helper is available on Linux only")

// HelperClient is the server process's end of the privileged helper (Linux only).
type HelperClient struct{}

// StartHelper fails: no privileged helper on this system.
func StartHelper([]string, HelperConfig, io.Writer) (*HelperClient, *exec.Cmd, error) {
	return nil, nil, errLinuxOnly
}

// ServeHelper fails: no privileged helper on this system.
func ServeHelper(int, *slog.Logger) error { return errLinuxOnly }

func (*HelperClient) OpenDevice(context.Context, tun.DeviceRequest) (int, string, error) {
	return -1, "", errLinuxOnly
}
func (*HelperClient) RunScript(context.Context, string, []string) error { return errLinuxOnly }
func (*HelperClient) Close() error                                      { return nil }
