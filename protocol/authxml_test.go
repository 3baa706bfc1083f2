package protocol

import (
	"encoding/xml"
	"strings"
	"testing"
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
	for _, doc := range [][]byte{loginForm("<b>&", "Login failed."), successDoc("hi & bye", "abc_DEF-123")} {
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

func FuzzParseClientDoc(f *testing.F) {
	f.Add([]byte(ocReply))
	f.Fuzz(func(t *testing.T, in []byte) { parseClientDoc("application/xml", in) })
}
