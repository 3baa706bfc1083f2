//go:build !linux

package tun

import (
	"context"
	"errors"

	"ocgate/protocol/datapath"
)

var errTUNLinuxOnly = errors.New("the tun datapath is available on Linux only")

// LocalOpener opens devices in this process (Linux only).
type LocalOpener struct{}

// OpenDevice fails: no TUN support on this system.
func (LocalOpener) OpenDevice(context.Context, DeviceRequest) (int, string, error) {
	return -1, "", errTUNLinuxOnly
}

// Datapath is the kernel-TUN datapath (Linux only).
type Datapath struct{}

// New fails: no TUN support on this system.
func New(Config) (*Datapath, error) { return nil, errTUNLinuxOnly }

func (*Datapath) Attach(*datapath.Session) (datapath.Port, error) { return nil, errTUNLinuxOnly }
func (*Datapath) Close() error                                    { return nil }
