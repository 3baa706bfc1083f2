// Package ctl is the management socket: `ocgate ctl` (and the same binary called occtl) talks to a running
// server through a Unix socket. The server side answers each command with occtl's JSON (the same key names and
// value types, see occtl.go) and with occtl-like human text; the client prints one or the other.
//
// Wire protocol, version 1: the client sends one JSON Request line; the server answers with one Response line,
// or, for `show events`, one Response line per event until the client closes the connection.
//
//	client ──{"v":1,"cmd":["show","users"]}──► server: peer uid check (SO_PEERCRED) ─► Backend ─► occtl encoders
//	client ◄──{"v":1,"ok":true,"text":"...","data":[...]}──
package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"ocgate/auth"
	"ocgate/protocol"
	"ocgate/protocol/cluster"
)

// Version is the wire protocol's version.
const Version = 1

// Request is one command.
type Request struct {
	V   int      `json:"v"`
	Cmd []string `json:"cmd"` // e.g. ["show", "user", "alice"]
}

// Response is the answer to a command (or one event of `show events`).
type Response struct {
	V     int             `json:"v"`
	OK    bool            `json:"ok"`
	Error string          `json:"error,omitempty"`
	Text  string          `json:"text,omitempty"` // occtl-like human output
	Data  json.RawMessage `json:"data,omitempty"` // occtl's JSON
}

// ReloadReport says what a reload changed: keys applied to new sessions and keys that need a restart.
type ReloadReport struct {
	Applied      []string
	NeedsRestart []string
}

// ServerInfo is what the backend says about the process.
type ServerInfo struct {
	PID      int
	Datapath string // "netstack" or "tun"
	Version  string
}

// Backend is what the management socket needs of the server; protocol.Server provides most of it and the
// command wires reload, stop and the ban list in.
type Backend interface {
	Status() protocol.Status
	SessionInfos() []protocol.SessionInfo
	Disconnect(id uint64) bool
	Terminate(id uint64) bool
	Subscribe() (<-chan protocol.Event, func())
	BanList() []auth.BanInfo
	Unban(a netip.Addr) bool
	Reload() (ReloadReport, error)
	Stop()
	ServerInfo() ServerInfo
	// ClusterSessions is every instance's sessions from the shared state (redis_url); an error without it.
	ClusterSessions() ([]cluster.Record, error)
}

// A command's shape: its words and how many arguments follow.
type command struct {
	words []string
	args  int    // 0 or 1
	arg   string // the argument's name in the usage
	doc   string
}

// commands lists occtl's commands that ocgate serves, in the order the usage prints them.
var commands = []command{
	{words: []string{"show", "status"}, doc: "server status and statistics"},
	{words: []string{"show", "users"}, doc: "connected users"},
	{words: []string{"show", "users", "--all-instances"}, doc: "the sessions of every instance sharing Redis (redis_url)"},
	{words: []string{"show", "user"}, args: 1, arg: "NAME", doc: "a user's sessions"},
	{words: []string{"show", "id"}, args: 1, arg: "ID", doc: "the session with this ID"},
	{words: []string{"show", "sessions", "all"}, doc: "every session (cookie)"},
	{words: []string{"show", "sessions", "valid"}, doc: "sessions whose cookie can still be used"},
	{words: []string{"show", "session"}, args: 1, arg: "SID", doc: "one session (cookie) by its SID"},
	{words: []string{"show", "ip", "bans"}, doc: "banned addresses"},
	{words: []string{"show", "ip", "ban", "points"}, doc: "addresses with ban points"},
	{words: []string{"unban", "ip"}, args: 1, arg: "IP", doc: "lift an address's ban"},
	{words: []string{"show", "iroutes"}, doc: "routes behind clients (iroute)"},
	{words: []string{"show", "events"}, doc: "stream connections and disconnections until interrupted"},
	{words: []string{"disconnect", "user"}, args: 1, arg: "NAME", doc: "close a user's tunnels (clients may reconnect)"},
	{words: []string{"disconnect", "id"}, args: 1, arg: "ID", doc: "close a session's tunnel (the client may reconnect)"},
	{words: []string{"terminate", "user"}, args: 1, arg: "NAME", doc: "end a user's sessions and cookies"},
	{words: []string{"terminate", "id"}, args: 1, arg: "ID", doc: "end a session and its cookie"},
	{words: []string{"terminate", "session"}, args: 1, arg: "SID", doc: "end a session by its SID"},
	{words: []string{"reload"}, doc: "re-read the configuration"},
	{words: []string{"stop", "now"}, doc: "stop the server"},
}

// ErrUsage is wrapped by ParseCommand's errors: the words are no command.
var ErrUsage = errors.New("unknown command")

// ParseCommand checks words against the command table and returns the command's key (its words joined) and
// argument. "show cookies ..." is occtl's alias of "show sessions ...", "show stats" of "show status".
func ParseCommand(words []string) (key, arg string, err error) {
	if len(words) >= 2 && words[0] == "show" {
		switch words[1] {
		case "cookies":
			words = append([]string{"show", "sessions"}, words[2:]...)
		case "cookie":
			words = append([]string{"show", "session"}, words[2:]...)
		case "stats":
			words = append([]string{"show", "status"}, words[2:]...)
		}
	}
	for _, c := range commands {
		n := len(c.words)
		if len(words) != n+c.args || !equalWords(words[:n], c.words) {
			continue
		}
		key = strings.Join(c.words, " ")
		if c.args == 1 {
			arg = words[n]
		}
		return key, arg, nil
	}
	return "", "", fmt.Errorf("%w: %q", ErrUsage, strings.Join(words, " "))
}

func equalWords(a, b []string) bool {
	for i := range a {
		if !strings.EqualFold(a[i], b[i]) {
			return false
		}
	}
	return true
}

// Usage is the list of commands, for the client's help.
func Usage() string {
	var b strings.Builder
	for _, c := range commands {
		w := strings.Join(c.words, " ")
		if c.args == 1 {
			w += " " + c.arg
		}
		fmt.Fprintf(&b, "  %-28s %s\n", w, c.doc)
	}
	return b.String()
}

func parseID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a session ID", s)
	}
	return id, nil
}
