package secmod

// Socket plumbing shared by the three processes: socketpairs, descriptors as connections, and descriptors
// passed with a message (SCM_RIGHTS).

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
)

// socketpair returns two connected SOCK_SEQPACKET sockets (close-on-exec), ours as a connection and theirs as a
// file for a child's ExtraFiles.
func socketpair(name string) (ours *net.UnixConn, theirs *os.File, err error) {
	fds, err := seqpacketPair()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: socketpair: %w", name, err)
	}
	theirs = os.NewFile(uintptr(fds[1]), name+"-child")
	ours, err = fileConn(fds[0])
	if err != nil {
		theirs.Close()
		return nil, nil, err
	}
	return ours, theirs, nil
}

// startChild starts exe with arg, its end of a new socketpair as descriptor 3 and stderr as its stdout and
// stderr, under childAttr (it dies with its parent), and returns our end.
func startChild(exe, arg, name string, stderr io.Writer) (*net.UnixConn, *exec.Cmd, error) {
	ours, theirs, err := socketpair(name)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(exe, arg)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, stderr, stderr
	cmd.SysProcAttr = childAttr()
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, nil, fmt.Errorf("starting the security module: %w", err)
	}
	return ours, cmd, nil
}

// fileConn turns descriptor fd into a connection; fd itself is closed.
func fileConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "secmod")
	if f == nil {
		return nil, fmt.Errorf("descriptor %d is not open", fd)
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("descriptor %d is not a unix socket", fd)
	}
	return uc, nil
}

// readWithFD reads one message and the first descriptor passed with it (-1: none; others are closed).
func readWithFD(c *net.UnixConn, buf []byte) (n, fd int, err error) {
	oob := make([]byte, syscall.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	fd = -1
	if err != nil {
		return 0, -1, err
	}
	msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
	for _, m := range msgs {
		fds, _ := syscall.ParseUnixRights(&m)
		for _, f := range fds {
			if fd < 0 {
				fd = f
			} else {
				syscall.Close(f)
			}
		}
	}
	return n, fd, nil
}
