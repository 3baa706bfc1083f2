package auth

// The login state machine. A login follows one chain of methods (the auth entries, all required, or one
// enable_auth alternative); each step answers with the next form or a verdict:
//
//	start ──(certificate method: read user and groups from the certificate; none → Refused)
//	  │
//	  ├─ password method? ── password form (username, password, group_list) ──wrong──▶ Failure, same form
//	  │        │ right
//	  │        ▼
//	  │   OTP file? ── one-time password form ("challenge") ──wrong or replayed──▶ Failure, password form
//	  │        │ right
//	  ├────────┴──▶ group check: a chosen group the user is not in → Refused; else Success
//	  │
//	  └─ certificate only: group form when there are groups to choose from and none was chosen, then Success
//
// A RADIUS method takes the password method's place (radius.go): the password goes in an Access-Request, and an
// Access-Challenge becomes a "challenge" form whose answer is sent with the server's State, as often as the
// server challenges; a reject at any point is a Failure and the password form again.
//
// The state of a login in progress stays here, named by an opaque LoginID the network side keeps for its
// connection; the network side never learns which steps passed.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Authenticator runs logins. It is the seam privilege separation will put behind a socket: plain values in and
// out, no connection. The steps of one login come one at a time (one connection's requests are sequential).
type Authenticator interface {
	Step(ctx context.Context, req Request) Reply
}

// Chain is the methods of one way to log in; every method present is required.
type Chain struct {
	Cert     *CertMethod     // nil: no certificate needed
	Password PasswordChecker // nil: no password asked
	OTP      *OTPFile        // nil: no one-time password asked (only after Password)
	Radius   *RadiusMethod   // nil: no RADIUS; else it asks for the password (Password is then nil)
}

// GroupConfig is ocserv's group selection.
type GroupConfig struct {
	Select  []GroupOption   // select_group: the groups offered, with their labels
	Auto    func() []string // auto_select_group: every group the password file names; nil = off
	Default string          // default_select_group: the option meaning "my default group"; "" = none
}

// ModuleConfig configures a Module.
type ModuleConfig struct {
	// Chains[0] is the auth entries; the others are enable_auth alternatives. A client that presents a
	// certificate follows the first chain with a certificate method, another client the first chain without one.
	Chains       []Chain
	Groups       GroupConfig
	LoginTimeout time.Duration // a login not finished within this is forgotten; 0 = 4 minutes
}

// Module is the in-process Authenticator.
type Module struct {
	cfg ModuleConfig

	mu     sync.Mutex
	logins map[string]*login // guarded by mu
}

var _ Authenticator = (*Module)(nil)

type stepKind int

const (
	stepPassword stepKind = iota
	stepOTP
	stepGroup           // certificate only: choose a group
	stepRadiusChallenge // answer a RADIUS Access-Challenge
)

// login is one login in progress.
type login struct {
	chain      *Chain
	started    time.Time
	step       stepKind
	cert       []byte   // the certificate it started with
	certUser   string   // from the certificate; "" without a certificate method
	certGroups []string // from the certificate (cert_group_oid)
	user       string   // after the password step
	groups     []string // after the password step: the password file's groups
	group      string   // the group the client chose
	grants     Grants   // after the password step: what a RADIUS server assigned

	acctID        string // RADIUS: the Acct-Session-Id of this login and its session
	radiusState   []byte // stepRadiusChallenge: the State to echo
	radiusUser    string // stepRadiusChallenge: the user being challenged
	radiusMessage string // stepRadiusChallenge: the server's Reply-Message
}

// NewModule returns a Module; cfg must name at least one chain.
func NewModule(cfg ModuleConfig) (*Module, error) {
	if len(cfg.Chains) == 0 {
		return nil, errors.New("auth: no authentication method")
	}
	for i, c := range cfg.Chains {
		if c.Radius != nil && c.Password != nil {
			return nil, fmt.Errorf("auth: method %d: radius and a password file both ask for the password", i)
		}
		if c.Cert == nil && c.Password == nil && c.Radius == nil {
			return nil, fmt.Errorf("auth: method %d asks for nothing", i)
		}
		if c.OTP != nil && c.Password == nil {
			return nil, fmt.Errorf("auth: method %d: a one-time password needs a password method", i)
		}
	}
	if cfg.LoginTimeout <= 0 {
		cfg.LoginTimeout = 4 * time.Minute
	}
	return &Module{cfg: cfg, logins: make(map[string]*login)}, nil
}

// PasswordModule is a Module asking only for a password checked by pc.
func PasswordModule(pc PasswordChecker) *Module {
	m, _ := NewModule(ModuleConfig{Chains: []Chain{{Password: pc}}})
	return m
}

// Step runs one step of a login.
func (m *Module) Step(ctx context.Context, req Request) Reply {
	l, id := m.lookup(req.LoginID, req.ClientCert)
	if l == nil {
		var r Reply
		if l, r = m.start(req.ClientCert); l == nil {
			return r
		}
		id = m.store(l)
	}
	if req.Group != "" {
		l.group = req.Group
	}
	r := m.advance(ctx, l, req)
	r.LoginID = id
	if r.User == "" {
		r.User = l.user
		if r.User == "" {
			r.User = l.certUser
		}
	}
	if r.Verdict == Success || r.Verdict == Refused {
		m.forget(id)
		r.LoginID = ""
	}
	return r
}

// start begins a login on the chain the certificate (or its absence) selects.
func (m *Module) start(cert []byte) (*login, Reply) {
	var chain *Chain
	for i := range m.cfg.Chains {
		if c := &m.cfg.Chains[i]; (c.Cert != nil) == (cert != nil) {
			chain = c
			break
		}
	}
	if chain == nil && cert != nil {
		// A certificate nobody asked for: log in as if it were absent.
		for i := range m.cfg.Chains {
			if c := &m.cfg.Chains[i]; c.Cert == nil {
				chain = c
				break
			}
		}
	}
	if chain == nil {
		return nil, Reply{Verdict: Refused, Reason: "no client certificate", Message: "No certificate"}
	}
	l := &login{chain: chain, started: time.Now(), cert: cert}
	if chain.Radius != nil {
		l.acctID = newAcctSessionID()
	}
	if chain.Cert != nil {
		id, err := chain.Cert.Identity(cert)
		if err != nil {
			return nil, Reply{Verdict: Refused, Reason: err.Error(), Message: "Could not read certificate"}
		}
		l.certUser, l.certGroups = id.User, id.Groups
		if chain.Password == nil && chain.Radius == nil {
			l.step = stepGroup
		}
	}
	return l, Reply{}
}

// advance handles the request at the login's current step.
func (m *Module) advance(ctx context.Context, l *login, req Request) Reply {
	switch l.step {
	case stepGroup:
		if req.Init && l.group == "" && len(m.groupOptions(l)) > 0 {
			return Reply{Verdict: Continue, Form: m.groupForm(l)}
		}
		l.user, l.groups = l.certUser, l.certGroups
		return m.finish(l)
	case stepOTP:
		if req.Init {
			return Reply{Verdict: Continue, Form: otpForm("")}
		}
		code := req.Answers["secondary_password"]
		if code == "" {
			code = req.Answers["password"]
		}
		if code == "" {
			return Reply{Verdict: Continue, Form: otpForm("Please enter your one-time password.")}
		}
		if err := l.chain.OTP.Verify(l.user, code); err != nil {
			l.step, l.user, l.groups = stepPassword, "", nil
			return failure(m.passwordForm(l, "Login failed."), err, "wrong one-time password")
		}
		return m.finish(l)
	case stepRadiusChallenge:
		if req.Init {
			return Reply{Verdict: Continue, Form: challengeForm(l.radiusMessage, "")}
		}
		answer, ok := req.Answers["secondary_password"]
		if !ok {
			answer = req.Answers["password"]
		}
		return m.radiusAsk(ctx, l, req, l.radiusUser, answer)
	}
	if req.Init {
		return Reply{Verdict: Continue, Form: m.passwordForm(l, "")}
	}
	user, password := req.Answers["username"], req.Answers["password"]
	if user == "" && l.certUser != "" {
		user = l.certUser
	}
	// An empty password is checked like any other: ocserv lets in a user whose hash is empty with it (and an
	// empty answer for anyone else is a failed login).
	if user == "" {
		return Reply{Verdict: Continue, Form: m.passwordForm(l, "Please enter your username and password.")}
	}
	if l.certUser != "" && user != l.certUser {
		return Reply{Verdict: Refused, User: user, Message: "Authentication failed",
			Reason: fmt.Sprintf("the certificate is %q's", l.certUser)}
	}
	if l.chain.Radius != nil {
		return m.radiusAsk(ctx, l, req, user, password)
	}
	id, err := l.chain.Password.CheckPassword(ctx, user, password)
	if err != nil {
		r := failure(m.passwordForm(l, "Login failed."), err, "wrong password or unknown user")
		r.User = user
		return r
	}
	l.user, l.groups = id.User, id.Groups
	if l.certGroups != nil {
		l.groups = l.certGroups // cert_group_oid: the certificate says which groups the user may choose
	}
	if l.chain.OTP != nil {
		l.step = stepOTP
		return Reply{Verdict: Continue, Form: otpForm("")}
	}
	return m.finish(l)
}

// failure is a Failure reply for err; reason is the log's wording of ErrBadCredentials.
func failure(form *Form, err error, reason string) Reply {
	switch {
	case errors.Is(err, ErrLocked):
		reason = "account locked"
	case errors.Is(err, ErrReplayed):
		reason = "one-time password replayed"
	case !errors.Is(err, ErrBadCredentials):
		reason = "error: " + err.Error()
	}
	return Reply{Verdict: Failure, Form: form, Reason: reason}
}

// finish ends a login whose methods all passed: the chosen group must be one of the user's.
func (m *Module) finish(l *login) Reply {
	id := Identity{User: l.user, Groups: slices.Clone(l.groups), Grants: l.grants, Certificate: l.certUser != ""}
	if g := l.group; g != "" && g != m.cfg.Groups.Default {
		i := slices.Index(id.Groups, g)
		if i < 0 {
			return Reply{Verdict: Refused, Message: "Authentication failed",
				Reason: fmt.Sprintf("not a member of the group %q it chose", g)}
		}
		// The chosen group goes first: its config_per_group file applies.
		id.Groups = append([]string{g}, slices.Delete(id.Groups, i, i+1)...)
	}
	return Reply{Verdict: Success, Identity: id}
}

// groupOptions are the groups the forms offer: default_select_group, select_group, the password file's groups
// (auto_select_group); with none of these, a certificate's groups when it names several.
func (m *Module) groupOptions(l *login) []GroupOption {
	g := m.cfg.Groups
	var opts []GroupOption
	seen := map[string]bool{}
	add := func(value, label string) {
		if !seen[value] {
			seen[value] = true
			opts = append(opts, GroupOption{Value: value, Label: label})
		}
	}
	if g.Default != "" {
		add(g.Default, g.Default)
	}
	for _, o := range g.Select {
		add(o.Value, o.Label)
	}
	if g.Auto != nil {
		for _, name := range g.Auto() {
			add(name, name)
		}
	}
	if len(opts) == 0 && len(l.certGroups) > 1 {
		for _, name := range l.certGroups {
			add(name, name)
		}
	}
	return opts
}

func (m *Module) passwordForm(l *login, errMsg string) *Form {
	return &Form{
		ID:      "main",
		Message: "Please enter your username and password.",
		Error:   errMsg,
		Inputs: []Input{
			{Type: "text", Name: "username", Label: "Username:"},
			{Type: "password", Name: "password", Label: "Password:"},
		},
		Groups: m.groupOptions(l),
		Group:  l.group,
	}
}

func (m *Module) groupForm(l *login) *Form {
	return &Form{ID: "main", Message: "Please select your group.", Groups: m.groupOptions(l), Group: l.group}
}

// otpForm asks for the one-time password. Its auth id and input name are the ones openconnect's
// --token-mode=totp|hotp fills from a software token (docs/protocol.md §3.4).
func otpForm(errMsg string) *Form {
	return &Form{
		ID:      "challenge",
		Message: "Please enter your one-time password.",
		Error:   errMsg,
		Inputs:  []Input{{Type: "password", Name: "secondary_password", Label: "OTP:"}},
	}
}

// lookup returns the login in progress named id, if it is still fresh and began with the same certificate.
func (m *Module) lookup(id string, cert []byte) (*login, string) {
	if id == "" {
		return nil, ""
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.logins[id]
	if l == nil || time.Since(l.started) > m.cfg.LoginTimeout || string(l.cert) != string(cert) {
		delete(m.logins, id)
		return nil, ""
	}
	return l, id
}

// store keeps a new login and forgets the expired ones.
func (m *Module) store(l *login) string {
	var b [18]byte
	rand.Read(b[:])
	id := base64.RawURLEncoding.EncodeToString(b[:])
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, o := range m.logins {
		if time.Since(o.started) > m.cfg.LoginTimeout {
			delete(m.logins, k)
		}
	}
	m.logins[id] = l
	return id
}

func (m *Module) forget(id string) {
	m.mu.Lock()
	delete(m.logins, id)
	m.mu.Unlock()
}
