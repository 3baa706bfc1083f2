package main

import (
	"fmt"
	"io"

	"ocgate/config"
)

// runConfig implements `ocgate config check FILE` and `ocgate config defaults`. Returns the exit status.
func runConfig(args []string, stdout, stderr io.Writer) int {
	usage := func() int {
		fmt.Fprintln(stderr, "usage: ocgate config check FILE | ocgate config defaults")
		return 2
	}
	if len(args) == 0 {
		return usage()
	}
	switch args[0] {
	case "defaults":
		if len(args) != 1 {
			return usage()
		}
		fmt.Fprint(stdout, config.DefaultsTOML())
		return 0
	case "check":
		if len(args) != 2 {
			return usage()
		}
		c, err := config.Load(args[1])
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		for _, w := range c.Warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		// The per-user and per-group files are read at each login; check them all now.
		warns, errs := c.CheckUserConfigs()
		for _, w := range warns {
			fmt.Fprintln(stderr, "warning:", w)
		}
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		if len(errs) > 0 {
			return 1
		}
		fmt.Fprintf(stdout, "%s: OK\n", args[1])
		return 0
	}
	return usage()
}
