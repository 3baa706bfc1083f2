package privsep

// isolate_workers: the sandbox of the network-facing process (isolate_linux.go). It is applied once the process
// listens and has dropped privileges, to every thread, and cannot be undone.

// IsolateConfig lists the files the sandboxed process still needs.
type IsolateConfig struct {
	ReadDirs  []string // read-only directories (configuration, system files); missing ones are skipped
	ReadFiles []string // read-only files; missing ones are skipped
	WriteDirs []string // read-write: the state directory, the control socket's and the pid file's directories
	Devices   []string // read-write with ioctl: /dev/net/tun when the process creates devices itself
}

// IsolateReport says what was applied; a restriction the kernel lacks is a warning, not an error.
type IsolateReport struct {
	Seccomp  bool
	Landlock int // the Landlock ABI version enforced; 0: none
	Warnings []string
}
