package server

import (
	"github.com/airlockpam/airlock/internal/mfa"
	"github.com/airlockpam/airlock/internal/secretrotation"
)

// rotationMailer returns where a failed secret rotation's email to the
// project's admins goes: the SMTP server of --smtp-url, or nowhere (the
// failure is in the audit log and on the rotation either way).
func (s *Server) rotationMailer() secretrotation.Mailer {
	if s.cfg.SMTPURL == "" {
		return nil
	}
	m, err := mfa.ParseSMTPURL(s.cfg.SMTPURL) // checked in CheckAndSetDefaults
	if err != nil {
		return nil
	}
	return m
}
