package egress

import (
	"sync"

	"github.com/vishvananda/netlink"
)

// watchAddrs signals changed (without blocking) whenever an address of the host is added or removed, until stop
// is closed. Without a netlink socket (a sandbox that refuses it) the periodic refresh alone follows changes.
func watchAddrs(stop <-chan struct{}, changed chan<- struct{}, wg *sync.WaitGroup) {
	updates := make(chan netlink.AddrUpdate, 64)
	if err := netlink.AddrSubscribeWithOptions(updates, stop, netlink.AddrSubscribeOptions{}); err != nil {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case _, ok := <-updates:
				if !ok {
					return
				}
				select {
				case changed <- struct{}{}:
				default:
				}
			}
		}
	}()
}
