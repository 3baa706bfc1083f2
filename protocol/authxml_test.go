package protocol

import (
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

func FuzzParseClientDoc(f *testing.F) {
	f.Add([]byte(ocReply))
	f.Fuzz(func(t *testing.T, in []byte) { parseClientDoc("application/xml", in) })
}
