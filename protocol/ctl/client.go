package ctl

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// Client is a connection to a server's management socket, for one command.
type Client struct {
	c        net.Conn
	sc       *bufio.Scanner
	writeErr error // sending the request failed: the server may have refused us first and said why
}

// Dial connects to the socket at path and sends the command words.
func Dial(path string, words []string) (*Client, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connecting to the server's control socket: %w", err)
	}
	b, _ := json.Marshal(Request{V: Version, Cmd: words})
	_, werr := c.Write(append(b, '\n'))
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	return &Client{c: c, sc: sc, writeErr: werr}, nil
}

// Next returns the next response; for commands other than `show events` there is exactly one. A refused command
// is an error carrying the server's message.
func (c *Client) Next() (Response, error) {
	if !c.sc.Scan() {
		if c.writeErr != nil {
			return Response{}, c.writeErr
		}
		if err := c.sc.Err(); err != nil {
			return Response{}, err
		}
		return Response{}, errors.New("the server closed the connection")
	}
	var r Response
	if err := json.Unmarshal(c.sc.Bytes(), &r); err != nil {
		return Response{}, fmt.Errorf("bad response: %w", err)
	}
	if !r.OK {
		return r, errors.New(r.Error)
	}
	return r, nil
}

// Close ends the connection (and a `show events` stream).
func (c *Client) Close() error { return c.c.Close() }
