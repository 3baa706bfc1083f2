//go:build !linux

package egress

import "sync"

// watchAddrs: elsewhere the periodic refresh alone follows address changes.
func watchAddrs(<-chan struct{}, chan<- struct{}, *sync.WaitGroup) {}
