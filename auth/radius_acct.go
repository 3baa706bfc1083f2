package auth

// RADIUS accounting (ocserv's acct = "radius[config=FILE]", RFC 2866): Start when a session connects, Interim-Update
// every Acct-Interim-Interval, Stop when it ends, each to the acctserver list with failover. The caller decides
// what a failure means: ocserv refuses a session whose Start no server answered, and retries Interim and Stop.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"
	"layeh.com/radius/rfc6911"
)

// AcctStatus is the kind of an accounting request.
type AcctStatus int

const (
	AcctStart AcctStatus = iota + 1
	AcctStop
	AcctInterim
)

func (s AcctStatus) String() string {
	switch s {
	case AcctStart:
		return "start"
	case AcctStop:
		return "stop"
	case AcctInterim:
		return "interim-update"
	}
	return fmt.Sprintf("AcctStatus(%d)", int(s))
}

// AcctRecord is what an accounting request reports about a session. rx is from the client (RADIUS's input).
type AcctRecord struct {
	Status    AcctStatus
	SessionID string // Acct-Session-Id
	User      string
	Remote    netip.Addr // Calling-Station-Id
	IPv4      netip.Addr // Framed-IP-Address
	IPv6      netip.Addr // Framed-IPv6-Address
	Class     [][]byte   // echoed from the Access-Accept

	RxBytes, TxBytes, RxPackets, TxPackets uint64
	Duration                               time.Duration  // Acct-Session-Time (Interim, Stop)
	Cause                                  TerminateCause // Stop
}

// TerminateCause is an Acct-Terminate-Cause (RFC 2866 §5.10).
type TerminateCause uint32

const (
	CauseUserRequest    TerminateCause = 1
	CauseLostCarrier    TerminateCause = 2
	CauseIdleTimeout    TerminateCause = 4
	CauseSessionTimeout TerminateCause = 5
	CauseAdminReset     TerminateCause = 6
	CauseAdminReboot    TerminateCause = 7
	CauseNASError       TerminateCause = 9
	CauseNASRequest     TerminateCause = 10
)

// Accounting reports sessions to an accounting service. Send may block for the service's whole timeout; it is
// safe for concurrent use.
type Accounting interface {
	Send(ctx context.Context, r AcctRecord) error
}

// RadiusAccounting is the Accounting of a radcli configuration's acctserver list.
type RadiusAccounting struct {
	client        radiusClient
	nasIdentifier string
}

var _ Accounting = (*RadiusAccounting)(nil)

// NewRadiusAccounting returns the accounting of cfg.
func NewRadiusAccounting(cfg *RadiusConfig) (*RadiusAccounting, error) {
	if len(cfg.AcctServers) == 0 {
		return nil, errors.New("radius: the configuration names no acctserver")
	}
	return &RadiusAccounting{
		client:        radiusClient{servers: cfg.AcctServers, timeout: cfg.Timeout, retries: cfg.Retries},
		nasIdentifier: cfg.NASIdentifier,
	}, nil
}

// Send sends one Accounting-Request and waits for its Accounting-Response.
func (a *RadiusAccounting) Send(ctx context.Context, r AcctRecord) error {
	resp, err := a.client.exchange(ctx, func(secret []byte) (*radius.Packet, error) {
		p := radius.New(radius.CodeAccountingRequest, secret)
		return p, fillAcct(p, r, a.nasIdentifier)
	})
	if err != nil {
		return err
	}
	if resp.Code != radius.CodeAccountingResponse {
		return fmt.Errorf("radius: accounting answered with %v", resp.Code)
	}
	return nil
}

// fillAcct writes r's attributes into p.
func fillAcct(p *radius.Packet, r AcctRecord, nasID string) error {
	status := map[AcctStatus]rfc2866.AcctStatusType{
		AcctStart: rfc2866.AcctStatusType_Value_Start, AcctStop: rfc2866.AcctStatusType_Value_Stop,
		AcctInterim: rfc2866.AcctStatusType_Value_InterimUpdate,
	}[r.Status]
	if status == 0 {
		return fmt.Errorf("radius: accounting status %v", r.Status)
	}
	rfc2866.AcctStatusType_Set(p, status)
	if err := rfc2866.AcctSessionID_SetString(p, r.SessionID); err != nil {
		return err
	}
	if err := rfc2865.UserName_SetString(p, r.User); err != nil {
		return err
	}
	rfc2866.AcctAuthentic_Set(p, rfc2866.AcctAuthentic_Value_RADIUS)
	rfc2865.ServiceType_Set(p, rfc2865.ServiceType_Value_FramedUser)
	rfc2865.FramedProtocol_Set(p, rfc2865.FramedProtocol_Value_PPP)
	rfc2865.NASPortType_Set(p, rfc2865.NASPortType_Value_Virtual)
	addNASAttrs(p, nasID)
	if r.Remote.IsValid() {
		rfc2865.CallingStationID_SetString(p, r.Remote.String())
	}
	if r.IPv4.Is4() {
		rfc2865.FramedIPAddress_Set(p, r.IPv4.AsSlice())
	}
	if r.IPv6.Is6() {
		rfc6911.FramedIPv6Address_Set(p, r.IPv6.AsSlice())
	}
	for _, c := range r.Class {
		rfc2865.Class_Add(p, c)
	}
	rfc2869.EventTimestamp_Set(p, time.Now())
	if r.Status == AcctStart {
		return nil
	}
	rfc2866.AcctSessionTime_Set(p, rfc2866.AcctSessionTime(r.Duration/time.Second))
	rfc2866.AcctInputOctets_Set(p, rfc2866.AcctInputOctets(uint32(r.RxBytes)))
	rfc2866.AcctOutputOctets_Set(p, rfc2866.AcctOutputOctets(uint32(r.TxBytes)))
	rfc2869.AcctInputGigawords_Set(p, rfc2869.AcctInputGigawords(uint32(r.RxBytes>>32)))
	rfc2869.AcctOutputGigawords_Set(p, rfc2869.AcctOutputGigawords(uint32(r.TxBytes>>32)))
	rfc2866.AcctInputPackets_Set(p, rfc2866.AcctInputPackets(uint32(r.RxPackets)))
	rfc2866.AcctOutputPackets_Set(p, rfc2866.AcctOutputPackets(uint32(r.TxPackets)))
	if r.Status == AcctStop && r.Cause != 0 {
		rfc2866.AcctTerminateCause_Set(p, rfc2866.AcctTerminateCause(r.Cause))
	}
	return nil
}
