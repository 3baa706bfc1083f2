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
	raw := xml.NewDecoder(bytes.NewReader(trimmed))
	raw.Strict = true
	d := xml.NewTokenDecoder(&depthLimit{in: raw, max: maxXMLDepth})
	if err := d.Decode(doc); err != nil {
		return nil, fmt.Errorf("malformed XML: %w", err)
	}
	switch doc.Type {
	case "init", "auth-reply":
	default:
		return nil, fmt.Errorf("unexpected config-auth type %.32q", doc.Type)
	}
	return doc, nil
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
