//go:build !linux

package privsep

// Isolate does nothing here: seccomp and Landlock are Linux's.
func Isolate(IsolateConfig) (IsolateReport, error) {
	return IsolateReport{Warnings: []string{"isolate_workers: seccomp and Landlock exist on Linux only; the process is not sandboxed"}}, nil
}
