package protocol

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"

	"ocgate/auth"
)

// The documents openconnect 9.01 sends (docs/protocol.md §3.3, §3.5).
const (
	ocInit = `<?xml version="1.0" encoding="UTF-8"?>
<config-auth client="vpn" type="init" aggregate-auth-version="2"><version who="vpn">v9.01-3</version><device-id>linux-64</device-id><capabilities><auth-method>single-sign-on-v2</auth-method><auth-method>single-sign-on-external-browser</auth-method></capabilities><group-access>https://127.0.0.1:8443/</group-access></config-auth>`
	ocReply = `<?xml version="1.0" encoding="UTF-8"?>
<config-auth client="vpn" type="auth-reply" aggregate-auth-version="2"><version who="vpn">v9.01-3</version><device-id>linux-64</device-id><capabilities><auth-method>single-sign-on-v2</auth-method></capabilities><auth><username>alice</username><password>p&amp;ss&lt;w</password></auth></config-auth>`
)

func TestParseClientDoc(t *testing.T) {
	d, err := parseClientDoc("application/xml; charset=utf-8", []byte(ocInit))
	if err != nil || d.Type != "init" {
		t.Fatalf("init: %+v %v", d, err)
	}
	d, err = parseClientDoc("application/xml; charset=utf-8", []byte(ocReply))
	if err != nil || d.Type != "auth-reply" || d.Auth.Username != "alice" || d.Auth.Password != "p&ss<w" {
		t.Fatalf("reply: %+v %v", d, err)
	}
	d, err = parseClientDoc("application/x-www-form-urlencoded", []byte("username=bob&password=a%26b&group_list=g"))
	if err != nil || d.Auth.Username != "bob" || d.Auth.Password != "a&b" || d.GroupSelect != "g" {
		t.Fatalf("form: %+v %v", d, err)
	}
	for _, bad := range []string{"<config-auth", "<config-auth type=\"evil\"></config-auth>", "<x/>", "<config-auth><a></b></config-auth>",
		`<config-auth type="init">` + strings.Repeat("<a>", 17) + strings.Repeat("</a>", 17) + `</config-auth>`} {
		if _, err := parseClientDoc("application/xml", []byte(bad)); err == nil {
			t.Errorf("parseClientDoc(%q) succeeded", bad)
		}
	}
}

func TestFormsAreWellFormed(t *testing.T) {
	form := &auth.Form{ID: "main", Message: "m", Error: "Login failed.",
		Inputs: []auth.Input{{Type: "text", Name: "username", Label: "User\"name:"}},
		Groups: []auth.GroupOption{{Value: "a&b", Label: "<A>"}, {Value: "c", Label: "C"}}, Group: "c"}
	for _, doc := range [][]byte{formDoc("<b>&", form), successDoc("hi & bye", "abc_DEF-123")} {
		d := xml.NewDecoder(strings.NewReader(string(doc)))
		for {
			if _, err := d.Token(); err != nil {
				if err.Error() == "EOF" {
					break
				}
				t.Fatalf("%s: %v", doc, err)
			}
		}
	}
	if !strings.Contains(string(successDoc("", "C")), `<auth id="success">`) {
		t.Fatal("success document lacks <auth id=\"success\">")
	}
}

// The form as openconnect reads it: the auth id, the inputs, the group_list select with its preselected option.
func TestFormDoc(t *testing.T) {
	doc := formDoc("", &auth.Form{ID: "challenge", Message: "Please enter your one-time password.",
		Inputs: []auth.Input{{Type: "password", Name: "secondary_password", Label: "OTP:"}},
		Groups: []auth.GroupOption{{Value: "eng", Label: "Engineering"}, {Value: "ops", Label: "ops"}}, Group: "ops"})
	var parsed struct {
		Auth struct {
			ID      string `xml:"id,attr"`
			Message string `xml:"message"`
			Form    struct {
				Action string `xml:"action,attr"`
				Inputs []struct {
					Type string `xml:"type,attr"`
					Name string `xml:"name,attr"`
				} `xml:"input"`
				Select struct {
					Name    string `xml:"name,attr"`
					Options []struct {
						Value    string `xml:"value,attr"`
						Selected string `xml:"selected,attr"`
						Label    string `xml:",chardata"`
					} `xml:"option"`
				} `xml:"select"`
			} `xml:"form"`
		} `xml:"auth"`
	}
	if err := xml.Unmarshal(doc, &parsed); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	a := parsed.Auth
	if a.ID != "challenge" || a.Form.Action != "/auth" || len(a.Form.Inputs) != 1 || a.Form.Inputs[0].Name != "secondary_password" ||
		a.Form.Select.Name != "group_list" || len(a.Form.Select.Options) != 2 || a.Form.Select.Options[0].Label != "Engineering" ||
		a.Form.Select.Options[1].Selected != "true" || a.Form.Select.Options[0].Selected != "" {
		t.Fatalf("unexpected form %+v\n%s", a, doc)
	}
}

// parseClientDocSlow is parseClientDoc's encoding/xml path alone.
func parseClientDocSlow(b []byte) (*clientDoc, error) {
	doc := &clientDoc{}
	raw := xml.NewDecoder(bytes.NewReader(bytes.TrimSpace(b)))
	raw.Strict = true
	err := xml.NewTokenDecoder(&depthLimit{in: raw, max: maxXMLDepth}).Decode(doc)
	return doc, err
}

// The fast path reads the documents openconnect sends, and what it reads, encoding/xml reads the same way.
func TestClientXMLFast(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		fast     bool
	}{
		{"openconnect init", ocInit, true},
		{"openconnect reply, plain password", strings.Replace(ocReply, "p&amp;ss&lt;w", "pass word", 1), true},
		{"openconnect reply, escaped password", ocReply, false},
		{"no prolog, single quotes, CRLF", "<config-auth type='auth-reply'>\r\n<auth><username>u</username>" +
			"<password/></auth></config-auth>\r\n", true},
		{"group-select", `<config-auth type="init"><group-select>g1</group-select></config-auth>`, true},
		{"CR in a field", "<config-auth type=\"init\"><version>a\rb</version></config-auth>", false},
		{"non-ASCII password", `<config-auth type="auth-reply"><auth><password>pässword</password></auth></config-auth>`, false},
		{"comment", `<config-auth type="init"><!-- x --></config-auth>`, false},
		{"CDATA", `<config-auth type="init"><version><![CDATA[x]]></version></config-auth>`, false},
		{"namespace prefix", `<config-auth type="init"><a:version>x</a:version></config-auth>`, false},
		{"a field twice", `<config-auth type="init"><version>1</version><version>2</version></config-auth>`, false},
		{"a field with children", `<config-auth type="init"><version>1<b/></version></config-auth>`, false},
		{"mismatched end", `<config-auth type="init"><a></b></config-auth>`, false},
		{"other root", `<x type="init"/>`, false},
		{"text after the root", `<config-auth type="init"/>x`, false},
		{"unterminated", `<config-auth type="init"><auth>`, false},
		{"too deep", `<config-auth type="init">` + strings.Repeat("<a>", 16) + strings.Repeat("</a>", 16) + `</config-auth>`, false},
		{"deepest allowed", `<config-auth type="init">` + strings.Repeat("<a>", 15) + strings.Repeat("</a>", 15) + `</config-auth>`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fast clientDoc
			ok := parseClientXMLFast(bytes.TrimSpace([]byte(tc.in)), &fast)
			if ok != tc.fast {
				t.Fatalf("fast path took it: %v, want %v", ok, tc.fast)
			}
			slow, err := parseClientDocSlow([]byte(tc.in))
			if ok && (err != nil || fast != *slow) {
				t.Fatalf("fast path read %+v, encoding/xml %+v (%v)", fast, *slow, err)
			}
		})
	}
}

// FuzzClientXMLFast: whatever the fast path accepts, encoding/xml accepts and reads the same.
func FuzzClientXMLFast(f *testing.F) {
	f.Add([]byte(ocInit))
	f.Add([]byte(strings.Replace(ocReply, "p&amp;ss&lt;w", "pass word", 1)))
	f.Add([]byte("<config-auth type='auth-reply'>\r\n<auth><username>u</username><password/></auth></config-auth>"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var fast clientDoc
		if !parseClientXMLFast(bytes.TrimSpace(in), &fast) {
			return
		}
		slow, err := parseClientDocSlow(in)
		if err != nil || fast != *slow {
			t.Fatalf("%q: fast path read %+v, encoding/xml %+v (%v)", in, fast, *slow, err)
		}
	})
}

func BenchmarkParseClientDoc(b *testing.B) {
	reply := []byte(strings.Replace(ocReply, "p&amp;ss&lt;w", "pass word", 1))
	b.ReportAllocs()
	for b.Loop() {
		parseClientDoc("application/xml", []byte(ocInit))
		parseClientDoc("application/xml", reply)
	}
}

func FuzzParseClientDoc(f *testing.F) {
	f.Add([]byte(ocReply))
	f.Fuzz(func(t *testing.T, in []byte) { parseClientDoc("application/xml", in) })
}
