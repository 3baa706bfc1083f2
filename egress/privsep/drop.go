package privsep

// Dropping root once the sockets are bound (run_as_user, run_as_group), as ocserv does.

import (
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// DropPrivileges switches the process to userName and groupName (empty: the user's group) when it runs as root.
// Without userName a root process stays root and says so. helper says whether a privileged helper keeps root
// for the devices and scripts (only for the log line).
func DropPrivileges(userName, groupName string, helper bool, log *slog.Logger) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if userName == "" {
		log.Warn("running as root: set run_as_user to drop privileges once the sockets are bound")
		return nil
	}
	u, err := user.Lookup(userName)
	if err != nil {
		return fmt.Errorf("run_as_user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if groupName != "" {
		g, err := user.LookupGroup(groupName)
		if err != nil {
			return fmt.Errorf("run_as_group: %w", err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	// Go applies these to every thread of the process.
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("dropping privileges: setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("dropping privileges: setgid: %w", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("dropping privileges: setuid: %w", err)
	}
	if os.Geteuid() == 0 || syscall.Setuid(0) == nil {
		return fmt.Errorf("dropping privileges: still root after setuid(%d)", uid)
	}
	keeps := "none"
	if helper {
		keeps = "creates devices and runs scripts as root"
	}
	log.Info("dropped privileges", "user", userName, "uid", uid, "gid", gid, "privileged_helper", keeps)
	return nil
}
