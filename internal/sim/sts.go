package sim

import (
	"net/http"
)

// stsActions are the STS Query API actions the simulator answers.
var stsActions map[string]func(*request) (any, *APIError)

func init() {
	stsActions = map[string]func(*request) (any, *APIError){
		"GetCallerIdentity":          stsGetCallerIdentity,
		"DecodeAuthorizationMessage": stsDecodeAuthorizationMessage,
	}
}

type getCallerIdentityResult struct {
	Arn     string `xml:"Arn"`
	UserID  string `xml:"UserId"`
	Account string `xml:"Account"`
}

// stsGetCallerIdentity needs no permission, as on AWS.
func stsGetCallerIdentity(r *request) (any, *APIError) {
	p := r.principal
	return &getCallerIdentityResult{Arn: p.arn, UserID: p.userID, Account: r.w.st.AccountID}, nil
}

type decodeAuthorizationMessageResult struct {
	DecodedMessage string `xml:"DecodedMessage"`
}

// stsDecodeAuthorizationMessage decodes the messages of UnauthorizedOperation
// errors this simulator produced, for callers allowed
// sts:DecodeAuthorizationMessage.
func stsDecodeAuthorizationMessage(r *request) (any, *APIError) {
	enc := r.params.Get("EncodedMessage")
	if enc == "" {
		return nil, errorf(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter EncodedMessage")
	}
	if e := r.check("sts:DecodeAuthorizationMessage"); e != nil {
		return nil, e
	}
	msg, ok := r.s.decodeAuthMessage(enc)
	if !ok {
		return nil, errorf(http.StatusBadRequest, "InvalidAuthorizationMessageException", "The message is not a valid authorization message or it has expired.")
	}
	return &decodeAuthorizationMessageResult{DecodedMessage: msg}, nil
}
