package auth

// The values that cross the authentication seam: what the network-facing side sends for each step of a login
// (Request) and what the module answers (Reply: a form to show, or a verdict). They are plain structs of strings
// and bytes so that the module can later run in another process behind a socket.

// Request is one step of a login: the client's init (or GET) or its answer to the last form.
type Request struct {
	LoginID    string            // from the previous Reply; "" starts a login
	Remote     string            // the client's address, for logs and RADIUS
	ClientCert []byte            // DER of the client's certificate, verified by the TLS handshake; nil: none
	Init       bool              // the client (re)starts: show the current form; an answer otherwise
	Group      string            // the group the client chose (<group-select>, group_list); "" = none
	Answers    map[string]string // the form's inputs by name (username, password, secondary_password)
}

// Verdict is the outcome of a step.
type Verdict int

const (
	// Continue: show Reply.Form and call Step again with the answer.
	Continue Verdict = iota
	// Success: Reply.Identity is logged in.
	Success
	// Failure: a wrong answer (counted towards ban points); Reply.Form asks again, with an error.
	Failure
	// Refused: the login cannot succeed on this connection (no certificate, a group the user is not in); the
	// client gets a 401 with Reply.Message.
	Refused
)

// Reply is the module's answer to a Request.
type Reply struct {
	LoginID  string
	Verdict  Verdict
	Form     *Form    // Continue and Failure
	Identity Identity // Success
	User     string   // the user name as far as known, for logs
	Reason   string   // Failure and Refused: why, for the log; never a secret
	Message  string   // Refused: the reason given to the client
}

// Form is one auth-request form (docs/protocol.md §3.4). The network side renders it.
type Form struct {
	ID      string // the auth id: "main", or "challenge" for a second factor (openconnect's --token-mode fills it)
	Message string
	Error   string
	Inputs  []Input
	Groups  []GroupOption // non-empty: a group_list select
	Group   string        // the option preselected
}

// Input is a text or password input of a form.
type Input struct {
	Type  string // "text" or "password"
	Name  string
	Label string
}

// GroupOption is an option of the group_list select: openconnect's --authgroup matches Label and sends Value.
type GroupOption struct {
	Value string
	Label string
}
