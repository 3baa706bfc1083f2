package protocol

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/url"
	"strings"

	"ocgate/auth"
)

// The XML documents of the authentication phase (docs/protocol.md §3.3–§3.6).

// clientDoc is what we read of a client's <config-auth> document (init or auth-reply): the inputs of our forms.
type clientDoc struct {
	XMLName     xml.Name `xml:"config-auth"`
	Type        string   `xml:"type,attr"`
	Version     string   `xml:"version"`
	DeviceID    string   `xml:"device-id"`
	GroupSelect string   `xml:"group-select"`
	Auth        struct {
		Username          string `xml:"username"`
		Password          string `xml:"password"`
		SecondaryPassword string `xml:"secondary_password"`
	} `xml:"auth"`
}

// parseClientDoc parses an authentication request body. XML (openconnect's default) and the legacy
// application/x-www-form-urlencoded bodies (openconnect --no-xmlpost) are accepted. An empty body is an init.
func parseClientDoc(contentType string, body []byte) (*clientDoc, error) {
	doc := &clientDoc{}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		doc.Type = "init"
		return doc, nil
	}
	if strings.HasPrefix(contentType, "application/x-www-form-urlencoded") || trimmed[0] != '<' {
		v, err := url.ParseQuery(string(trimmed))
		if err != nil {
			return nil, fmt.Errorf("malformed form body: %w", err)
		}
		doc.Type = "auth-reply"
		doc.Auth.Username = v.Get("username")
		doc.Auth.Password = v.Get("password")
		doc.Auth.SecondaryPassword = v.Get("secondary_password")
		doc.GroupSelect = v.Get("group_list")
		if !v.Has("username") && !v.Has("password") && !v.Has("secondary_password") {
			doc.Type = "init"
		}
		return doc, nil
	}
	if !parseClientXMLFast(trimmed, doc) {
		*doc = clientDoc{}
		raw := xml.NewDecoder(bytes.NewReader(trimmed))
		raw.Strict = true
		d := xml.NewTokenDecoder(&depthLimit{in: raw, max: maxXMLDepth})
		if err := d.Decode(doc); err != nil {
			return nil, fmt.Errorf("malformed XML: %w", err)
		}
	}
	switch doc.Type {
	case "init", "auth-reply":
	default:
		return nil, fmt.Errorf("unexpected config-auth type %.32q", doc.Type)
	}
	return doc, nil
}

// parseClientXMLFast reads doc from b when b keeps to the plain subset of XML that openconnect and AnyConnect send:
// an optional `<?xml version="1.0" encoding="UTF-8"?>`, then elements and attributes with ASCII names (no
// namespaces), double- or single-quoted attribute values and text of printable ASCII, tabs and newlines,
// without entity or character references, comments, CDATA or processing instructions; each field read at most
// once, from an element without children. It reports false for anything else, and parseClientDoc then runs
// encoding/xml, which accepts or refuses it: whatever this accepts, encoding/xml reads the same way
// (FuzzClientXMLFast checks that). encoding/xml costs ~15 µs and ~110 allocations per document, a few per cent of
// a login's CPU in the network process; this, under a microsecond and no allocation but the strings.
func parseClientXMLFast(b []byte, doc *clientDoc) bool {
	const (
		fVersion = 1 << iota
		fDeviceID
		fGroup
		fAuth
		fUser
		fPassword
		fSecondary
		fType
	)
	i := 0
	for _, p := range []string{`<?xml version="1.0" encoding="UTF-8"?>`, `<?xml version="1.0" encoding="utf-8"?>`,
		`<?xml version="1.0"?>`} {
		if bytes.HasPrefix(b, []byte(p)) {
			i = len(p)
			break
		}
	}
	var stack [maxXMLDepth][]byte // open elements' names
	depth, seen := 0, 0
	field := 0 // the field the current element's text goes to, or 0
	var text []byte
	isName := func(c byte, first bool) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || !first && (c >= '0' && c <= '9' || c == '-' || c == '.')
	}
	name := func() []byte { // at i; empty when there is none
		j := i
		for j < len(b) && isName(b[j], j == i) {
			j++
		}
		n := b[i:j]
		i = j
		return n
	}
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
	for {
		// Text up to the next tag: outside the root only white space.
		j := i
		for j < len(b) && b[j] != '<' {
			c := b[j]
			if c == '&' || c == '>' || c >= 0x7f || c < ' ' && !isSpace(c) || depth == 0 && !isSpace(c) ||
				c == '\r' && field != 0 { // (encoding/xml turns CR LF into LF)
				return false
			}
			j++
		}
		if field != 0 {
			text = append(text, b[i:j]...)
		}
		i = j
		if i+1 >= len(b) {
			return false // the input ends before the document does
		}
		i++
		if b[i] == '/' { // an end tag
			i++
			n := name()
			for i < len(b) && isSpace(b[i]) {
				i++
			}
			if i >= len(b) || b[i] != '>' || depth == 0 || !bytes.Equal(n, stack[depth-1]) {
				return false
			}
			i++
			depth--
		} else { // a start tag
			n := name()
			if len(n) == 0 || depth == maxXMLDepth || depth == 0 && string(n) != "config-auth" {
				return false
			}
			stack[depth] = n
			depth++
			if field != 0 {
				return false // a field's element with children
			}
			var typ []byte
			selfClosing := false
			for {
				sp := i
				for i < len(b) && isSpace(b[i]) {
					i++
				}
				spaced := i > sp
				if i < len(b) && b[i] == '>' {
					i++
					break
				}
				if i+1 < len(b) && b[i] == '/' && b[i+1] == '>' {
					i += 2
					selfClosing = true
					break
				}
				an := name()
				if !spaced || len(an) == 0 || i+1 >= len(b) || b[i] != '=' || b[i+1] != '"' && b[i+1] != '\'' {
					return false
				}
				q := b[i+1]
				i += 2
				j := i
				for j < len(b) && b[j] != q {
					if c := b[j]; c == '<' || c == '&' || c >= 0x7f || c < ' ' {
						return false
					}
					j++
				}
				if j == len(b) {
					return false
				}
				if string(an) == "xmlns" {
					return false // a namespace: encoding/xml records the root's in XMLName
				}
				if depth == 1 && string(an) == "type" {
					if typ != nil {
						return false
					}
					typ = b[i:j:j]
				}
				i = j + 1
			}
			f := 0
			switch {
			case depth == 1:
				f = fType
				doc.XMLName, doc.Type = xml.Name{Local: "config-auth"}, string(typ)
			case depth == 2 && string(stack[0]) == "config-auth":
				switch string(n) {
				case "version":
					f = fVersion
				case "device-id":
					f = fDeviceID
				case "group-select":
					f = fGroup
				case "auth":
					f = fAuth
				}
			case depth == 3 && string(stack[1]) == "auth":
				switch string(n) {
				case "username":
					f = fUser
				case "password":
					f = fPassword
				case "secondary_password":
					f = fSecondary
				}
			}
			if f != 0 {
				if seen&f != 0 {
					return false // read twice: encoding/xml's rules for that are not repeated here
				}
				seen |= f
			}
			if f == fType || f == fAuth {
				f = 0 // no text of their own
			}
			field, text = f, text[:0]
			if !selfClosing {
				continue
			}
			depth--
		}
		// An element ended: its text goes to its field.
		switch field {
		case fVersion:
			doc.Version = string(text)
		case fDeviceID:
			doc.DeviceID = string(text)
		case fGroup:
			doc.GroupSelect = string(text)
		case fUser:
			doc.Auth.Username = string(text)
		case fPassword:
			doc.Auth.Password = string(text)
		case fSecondary:
			doc.Auth.SecondaryPassword = string(text)
		}
		field = 0
		if depth == 0 {
			for ; i < len(b); i++ {
				if !isSpace(b[i]) {
					return false
				}
			}
			return true
		}
	}
}

// maxXMLDepth bounds the nesting of a client's document: openconnect's are 3 deep. encoding/xml skips unknown
// elements at any depth, so without a bound a 64 KiB body of nested elements would be read to the end and
// answered with the login form.
const maxXMLDepth = 16

// depthLimit passes tokens through and fails once elements nest deeper than max.
type depthLimit struct {
	in    xml.TokenReader
	max   int
	depth int
}

func (l *depthLimit) Token() (xml.Token, error) {
	tok, err := l.in.Token()
	switch tok.(type) {
	case xml.StartElement:
		if l.depth++; l.depth > l.max {
			return nil, fmt.Errorf("elements nested deeper than %d", l.max)
		}
	case xml.EndElement:
		l.depth--
	}
	return tok, err
}

// xmlEscape escapes text for element content and attribute values.
func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// formDoc renders an auth-request document (docs/protocol.md §3.4) for a form of the login module: the one place
// forms become XML, in ocserv's shape. The banner (pre_login_banner) is shown above the form.
func formDoc(banner string, f *auth.Form) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<config-auth client="vpn" type="auth-request" aggregate-auth-version="2">` + "\n")
	b.WriteString(`<version who="sg">0.1(1)</version>` + "\n")
	id := f.ID
	if id == "" {
		id = "main"
	}
	fmt.Fprintf(&b, "<auth id=\"%s\">\n", xmlEscape(id))
	b.WriteString(`<title>Login</title>` + "\n")
	if banner != "" {
		fmt.Fprintf(&b, "<banner>%s</banner>\n", xmlEscape(banner))
	}
	if f.Message != "" {
		fmt.Fprintf(&b, "<message>%s</message>\n", xmlEscape(f.Message))
	}
	if f.Error != "" {
		fmt.Fprintf(&b, "<error>%s</error>\n", xmlEscape(f.Error))
	}
	b.WriteString(`<form method="post" action="/auth">` + "\n")
	for _, in := range f.Inputs {
		fmt.Fprintf(&b, "<input type=\"%s\" name=\"%s\" label=\"%s\" />\n",
			xmlEscape(in.Type), xmlEscape(in.Name), xmlEscape(in.Label))
	}
	if len(f.Groups) > 0 {
		b.WriteString(`<select name="group_list" label="Group:">` + "\n")
		for _, o := range f.Groups {
			sel := ""
			if o.Value == f.Group {
				sel = ` selected="true"`
			}
			fmt.Fprintf(&b, "<option value=\"%s\"%s>%s</option>\n", xmlEscape(o.Value), sel, xmlEscape(o.Label))
		}
		b.WriteString("</select>\n")
	}
	b.WriteString("</form>\n</auth>\n</config-auth>\n")
	return b.Bytes()
}

// successDoc renders the document that ends authentication. The cookie also travels as <session-token> (Cisco
// style) besides Set-Cookie, which is the most compatible choice (docs/protocol.md §3.6).
func successDoc(banner, cookie string) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<config-auth client="vpn" type="complete" aggregate-auth-version="2">` + "\n")
	b.WriteString(`<version who="sg">0.1(1)</version>` + "\n")
	b.WriteString(`<auth id="success">` + "\n")
	b.WriteString(`<title>SSL VPN Service</title>`)
	if banner != "" {
		fmt.Fprintf(&b, "<banner>%s</banner>", xmlEscape(banner))
	}
	b.WriteString("\n</auth>\n")
	fmt.Fprintf(&b, "<session-token>%s</session-token>\n", xmlEscape(cookie))
	b.WriteString("</config-auth>\n")
	return b.Bytes()
}

// answers are the inputs the client filled, by name, for the login module.
func (d *clientDoc) answers() map[string]string {
	a := make(map[string]string, 3)
	for name, v := range map[string]string{"username": d.Auth.Username, "password": d.Auth.Password,
		"secondary_password": d.Auth.SecondaryPassword} {
		if v != "" {
			a[name] = v
		}
	}
	return a
}
