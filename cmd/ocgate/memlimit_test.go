package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCgroupMemoryLimit(t *testing.T) {
	write := func(t *testing.T, root, rel, content string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name  string
		files map[string]string
		self  string
		want  int64
	}{
		{"v2", map[string]string{"srv/ocgate/memory.max": "268435456\n"}, "0::/srv/ocgate\n", 256 << 20},
		{"v2 unlimited", map[string]string{"srv/memory.max": "max\n"}, "0::/srv\n", 0},
		{"v2 namespaced", map[string]string{"memory.max": "134217728\n"}, "0::/\n", 128 << 20},
		{"v1", map[string]string{"memory/docker/x/memory.limit_in_bytes": "67108864\n"},
			"12:cpu,cpuacct:/docker/x\n4:memory:/docker/x\n0::/\n", 64 << 20},
		{"v1 unlimited", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"},
			"4:memory:/elsewhere\n0::/\n", 0},
		{"none", nil, "0::/\n", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for rel, content := range c.files {
				write(t, root, rel, content)
			}
			if got := cgroupMemoryLimit(root, []byte(c.self)); got != c.want {
				t.Errorf("cgroupMemoryLimit = %d, want %d", got, c.want)
			}
		})
	}
}
