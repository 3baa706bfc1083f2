package protocol

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// A small HTTP/1.1 reader and writer for the authentication phase. net/http is not used because the same
// connection turns into the CSTP stream after CONNECT, the client needs exact status lines, and every limit here
// must be ours (docs/protocol.md §3.1, §11).

const (
	maxRequestLine = 4096
	maxHeaderBytes = 16 << 10 // whole header block, as ocserv 1.4.2+
	maxHeaders     = 64
	maxBodyBytes   = 64 << 10 // auth XML documents are a few hundred bytes
)

// httpError is a request the server answers with a status and then closes the connection.
type httpError struct {
	status int
	reason string // status text sent to the client
	detail string // logged only
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.reason, e.detail) }

func badRequest(format string, args ...any) error {
	return &httpError{status: 400, reason: "Bad Request", detail: fmt.Sprintf(format, args...)}
}

// request is one parsed HTTP request.
type request struct {
	method string
	target string // the request target as sent, e.g. "/auth" or "/CSCOSSLC/tunnel"
	header header
	body   []byte
}

func (r *request) get(name string) string { return r.header.Get(name) }

// header is a request's header fields in the order they came, their names as sent. Lookups ignore case, as
// HTTP's field names do. A list, not textproto.MIMEHeader's map: a login's three requests carry ~15 fields each,
// and the map, a slice per name and each name's canonical form were a third of reading them.
type header []headerField

type headerField struct{ name, value string }

// Get returns the first value of the named field, or "".
func (h header) Get(name string) string {
	for _, f := range h {
		if len(f.name) == len(name) && strings.EqualFold(f.name, name) {
			return f.value
		}
	}
	return ""
}

// Values returns every value of the named field, in order.
func (h header) Values(name string) []string {
	var vs []string
	for _, f := range h {
		if len(f.name) == len(name) && strings.EqualFold(f.name, name) {
			vs = append(vs, f.value)
		}
	}
	return vs
}

// Add appends a field.
func (h *header) Add(name, value string) { *h = append(*h, headerField{name, value}) }

// cookie returns the value of the named cookie in the Cookie header(s), and whether it was present.
func (r *request) cookie(name string) (string, bool) {
	for _, line := range r.header.Values("Cookie") {
		for part := range strings.SplitSeq(line, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if ok && k == name {
				return v, true
			}
		}
	}
	return "", false
}

// readLine reads one CRLF- or LF-terminated line of at most limit bytes (without the line end).
func readLine(br *bufio.Reader, limit int, budget *int) (string, error) {
	chunk, err := br.ReadSlice('\n')
	if len(chunk) > limit || len(chunk) > *budget {
		return "", errLineTooLong()
	}
	switch err {
	case nil: // the whole line was buffered: one copy, into the string
		*budget -= len(chunk)
		return string(bytes.TrimSuffix(chunk[:len(chunk)-1], []byte("\r"))), nil
	case bufio.ErrBufferFull:
		return readLongLine(br, append([]byte(nil), chunk...), limit, budget)
	case io.EOF:
		if len(chunk) > 0 {
			err = io.ErrUnexpectedEOF
		}
	}
	return "", err
}

// readLongLine is readLine for a line longer than the reader's buffer, line holding its start.
func readLongLine(br *bufio.Reader, line []byte, limit int, budget *int) (string, error) {
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > limit || len(line) > *budget {
			return "", errLineTooLong()
		}
		if err == nil {
			break
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // (line holds the first chunk)
		}
		return "", err
	}
	*budget -= len(line)
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return string(line), nil
}

func errLineTooLong() error {
	return &httpError{status: 431, reason: "Request Header Fields Too Large", detail: "header line too long"}
}

// readRequest reads one request with its body. io.EOF means the client closed the connection between requests.
func readRequest(br *bufio.Reader) (*request, error) {
	budget := maxHeaderBytes
	line, err := readLine(br, maxRequestLine, &budget)
	if err != nil {
		return nil, err
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || target == "" {
		return nil, badRequest("malformed request line %.64q", line)
	}
	if proto != "HTTP/1.1" && proto != "HTTP/1.0" {
		return nil, badRequest("unsupported protocol %.32q", proto)
	}
	req := &request{method: method, target: target, header: make(header, 0, 16)}
	for n := 0; ; n++ {
		line, err := readLine(br, maxHeaderBytes, &budget)
		if err != nil {
			return nil, err
		}
		if line == "" {
			break
		}
		if n >= maxHeaders {
			return nil, &httpError{status: 431, reason: "Request Header Fields Too Large", detail: "too many header fields"}
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return nil, badRequest("malformed header line %.64q", line)
		}
		req.header.Add(k, strings.TrimSpace(v))
	}
	if te := req.get("Transfer-Encoding"); te != "" {
		return nil, &httpError{status: 501, reason: "Not Implemented", detail: "transfer-encoding " + te}
	}
	if cls := req.header.Values("Content-Length"); len(cls) > 1 {
		// Two lengths (even equal ones) are how requests get smuggled past a proxy that reads the other one.
		return nil, badRequest("%d Content-Length headers", len(cls))
	}
	if cl := req.get("Content-Length"); cl != "" {
		n, err := strconv.Atoi(cl)
		if err != nil || n < 0 {
			return nil, badRequest("bad Content-Length %.32q", cl)
		}
		if n > maxBodyBytes {
			return nil, &httpError{status: 413, reason: "Payload Too Large", detail: fmt.Sprintf("%d-byte body", n)}
		}
		req.body = make([]byte, n)
		if _, err := io.ReadFull(br, req.body); err != nil {
			return nil, fmt.Errorf("reading %d-byte body: %w", n, errors.Join(err, io.ErrUnexpectedEOF))
		}
	}
	return req, nil
}

// response is an HTTP response under construction.
type response struct {
	status int
	reason string
	header []string // "Name: value" lines, in order
	body   []byte
	close  bool // send Connection: close and close after writing
}

func (r *response) add(name, value string) { r.header = append(r.header, name+": "+value) }

// bytes renders the response. Every response carries a Content-Length: the client needs body framing.
func (r *response) bytes() []byte {
	n := 64 + len(r.reason) + len(r.body)
	for _, h := range r.header {
		n += len(h) + 2
	}
	b := make([]byte, 0, n)
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(r.status), 10)
	b = append(append(append(b, ' '), r.reason...), "\r\n"...)
	for _, h := range r.header {
		b = append(append(b, h...), "\r\n"...)
	}
	if r.close {
		b = append(b, "Connection: close\r\n"...)
	} else {
		b = append(b, "Connection: Keep-Alive\r\n"...)
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(r.body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, r.body...)
}

func errorResponse(status int, reason string) *response {
	return &response{status: status, reason: reason, close: true}
}
