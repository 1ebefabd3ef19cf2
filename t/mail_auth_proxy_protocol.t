#!/usr/bin/perl

# Tests for ngx-mail-auth: clients behind a PROXY-protocol load balancer. nginx's mail
# listeners have `proxy_protocol`; a real client (imaplib, poplib, smtplib) connects from
# 127.0.0.1 (the balancer) and names another loopback address (127.0.0.66, ...) in a PROXY v1
# header. nginx sends the balancer as Client-IP and the named address as Proxy-Protocol-Addr.
#   - without `mail_auth_real_ip_from`: every client is the balancer (one limiter budget for
#     all, network rules and the log see the balancer);
#   - with `mail_auth_real_ip_from 127.0.0.1`: the named client, for account network rules,
#     the limiter and the log; a connection from 127.0.0.2 (not listed) names nobody; an
#     address that is not one is a temporary failure;
#   - the alternative, `set_real_ip_from 127.0.0.1` in `mail {}`: nginx makes Client-IP the
#     named client itself, no directive of the module needed.

###############################################################################

use warnings;
use strict;

use Test::More;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail imap pop3 smtp http/);
workers_can_read($t);

my %pw = (alice => 'alice-pw', lan => 'lan-pw');

# lan may log in from 127.0.0.66 only (a passwd-file extra field)
$t->write_file('users', "alice:{PLAIN}alice-pw\n"
	. "lan:{PLAIN}lan-pw::::::allow_nets=127.0.0.66\n");

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        mail_auth_passwd_file %%TESTDIR%%/users;
        mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
        mail_auth_backend pop3 127.0.0.1:%%PORT_8111%%;
        mail_auth_backend smtp 127.0.0.1:%%PORT_8026%%;
        mail_auth_fail_wait 1s;

        # no trusted balancer: the module sees only Client-IP
        location = /auth-plain {
            mail_auth;
            mail_auth_limit zone=lim_plain:1m ip=3/m;
        }

        location = /auth-trust {
            mail_auth;
            mail_auth_limit zone=lim_trust:1m ip=3/m;
            mail_auth_real_ip_from 192.0.2.0/24;
            mail_auth_real_ip_from 127.0.0.1 ::1;
        }

        # for mail {} with set_real_ip_from: nothing of ours
        location = /auth-realip {
            mail_auth;
            mail_auth_limit zone=lim_realip:1m ip=3/m;
        }
    }

    # a location's own list replaces the server's: here only 127.0.0.2 is a balancer
    server {
        listen       127.0.0.1:8081;
        server_name  localhost;

        mail_auth_passwd_file %%TESTDIR%%/users;
        mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
        mail_auth_fail_wait 1s;
        mail_auth_real_ip_from 127.0.0.1;

        location = /auth-other {
            mail_auth;
            mail_auth_real_ip_from 127.0.0.2;
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth-trust;

    server {
        listen     127.0.0.1:8143 proxy_protocol;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-plain;
    }

    server {
        listen     127.0.0.1:8145 proxy_protocol;
        protocol   imap;
    }

    server {
        listen     127.0.0.1:8110 proxy_protocol;
        protocol   pop3;
    }

    server {
        listen     127.0.0.1:8025 proxy_protocol;
        protocol   smtp;
        smtp_auth  plain;
        xclient    off;
        proxy_smtp_auth on;
    }

    server {
        listen     127.0.0.1:8146 proxy_protocol;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-realip;
        set_real_ip_from 127.0.0.1;
    }

    server {
        listen     127.0.0.1:8147 proxy_protocol;
        protocol   imap;
        auth_http  127.0.0.1:8081/auth-other;
    }
}

EOF

my $log = $t->testdir() . '/backend.log';
$t->run_daemon(\&MailAuthBackend::imap, port(8144), $log, %pw);
$t->run_daemon(\&MailAuthBackend::pop3, port(8111), $log, %pw);
$t->run_daemon(\&MailAuthBackend::smtp, port(8026), $log, %pw);
$t->run()->plan(40);
$t->waitforsocket('127.0.0.1:' . port(8144));
$t->waitforsocket('127.0.0.1:' . port(8111));
$t->waitforsocket('127.0.0.1:' . port(8026));

###############################################################################

# a login through the balancer: (exit code, output)
sub via {
	my ($proto, $port, $claimed, $user, $pass, $source) = @_;
	return python_proxy($proto, port($port), $claimed, $user, $pass, $source // ());
}

sub python_proxy {
	open my $fh, '-|', 'python3', "$FindBin::Bin/lib/proxy_client.py", @_
		or return (2, "cannot run python3: $!");
	local $/;
	my $out = <$fh> // '';
	close $fh;
	return ($? >> 8, $out);
}

# the decision lines of the error log that match
sub decisions {
	my ($t, $re) = @_;
	return grep { /mail_auth: user=/ && /$re/ } split /\n/, $t->read_file('error.log');
}

my ($rc, $out);

# without the directive: the balancer is everyone

($rc, $out) = via('imap', 8143, '127.0.0.66', 'lan', 'lan-pw');
is($rc, 1, 'no directive: lan from 127.0.0.66 refused (the rule sees the balancer)') or diag($out);
is(scalar decisions($t, qr/user="lan" client=127\.0\.0\.1 .*result=network-denied/), 1,
	'no directive: logged with the balancer as client');

# 127.0.0.66 (above) and 127.0.0.77 spend the balancer's budget of 3 failures
($rc, $out) = via('imap', 8143, '127.0.0.77', 'alice', 'guess-1');
is($rc, 1, 'no directive: wrong password from 127.0.0.77') or diag($out);
($rc, $out) = via('imap', 8143, '127.0.0.66', 'alice', 'guess-2');
is($rc, 1, 'no directive: wrong password from 127.0.0.66') or diag($out);
($rc, $out) = via('imap', 8143, '127.0.0.88', 'alice', 'alice-pw');
is($rc, 1, 'no directive: 127.0.0.88 locked out by the others\' failures') or diag($out);
is(scalar decisions($t, qr/user="alice" client=127\.0\.0\.1 .*result=rate-limited/), 1,
	'no directive: the balancer is rate-limited');

my $balancer = () = decisions($t, qr/client=127\.0\.0\.1 /);

# with mail_auth_real_ip_from 127.0.0.1: the client the balancer names

($rc, $out) = via('imap', 8145, '127.0.0.66', 'lan', 'lan-pw');
is($rc, 0, 'trusted: lan from 127.0.0.66 logs in') or diag($out);
like($t->read_file('backend.log'), qr/^imap ok user=lan pass=lan-pw$/m, 'trusted: backend reached');
is(scalar decisions($t, qr/user="lan" client=127\.0\.0\.66 protocol=imap .*result=ok/), 1,
	'trusted: the log names 127.0.0.66');
($rc, $out) = via('imap', 8145, '127.0.0.77', 'lan', 'lan-pw');
is($rc, 1, 'trusted: lan from 127.0.0.77 refused') or diag($out);
is(scalar decisions($t, qr/user="lan" client=127\.0\.0\.77 .*result=network-denied reason="client 127\.0\.0\.77 not in allowed networks"/), 1,
	'trusted: network rule and log see 127.0.0.77');

# one client's failures do not lock out another behind the same balancer
for my $i (1 .. 3) {
	($rc, $out) = via('imap', 8145, '127.0.0.88', 'alice', "guess-$i");
	is($rc, 1, "trusted: wrong password $i from 127.0.0.88") or diag($out);
}
($rc, $out) = via('imap', 8145, '127.0.0.88', 'alice', 'alice-pw');
is($rc, 1, 'trusted: 127.0.0.88 is over its own limit') or diag($out);
is(scalar decisions($t, qr/user="alice" client=127\.0\.0\.88 .*result=rate-limited reason="too many failed logins from 127\.0\.0\.88/), 1,
	'trusted: the limiter counted 127.0.0.88');
($rc, $out) = via('imap', 8145, '127.0.0.99', 'alice', 'alice-pw');
is($rc, 0, 'trusted: 127.0.0.99 behind the same balancer logs in') or diag($out);
is(scalar decisions($t, qr/client=127\.0\.0\.1 /), $balancer, 'trusted: no decision names the balancer');

# POP3 and SMTP through the balancer too
($rc, $out) = via('pop3', 8110, '127.0.0.66', 'lan', 'lan-pw');
is($rc, 0, 'trusted: POP3 lan from 127.0.0.66') or diag($out);
is(scalar decisions($t, qr/user="lan" client=127\.0\.0\.66 protocol=pop3 .*result=ok/), 1, 'trusted: POP3 logged');
($rc, $out) = via('smtp', 8025, '127.0.0.66', 'lan', 'lan-pw');
is($rc, 0, 'trusted: SMTP AUTH lan from 127.0.0.66') or diag($out);
is(scalar decisions($t, qr/user="lan" client=127\.0\.0\.66 protocol=smtp .*result=ok/), 1, 'trusted: SMTP logged');
($rc, $out) = via('smtp', 8025, '127.0.0.77', 'lan', 'lan-pw');
like($out, qr/^FAIL 535 /, 'trusted: SMTP lan from 127.0.0.77 refused with 535') or diag($out);

# a source that is not a listed balancer cannot name a client: 127.0.0.2 claims 127.0.0.66

($rc, $out) = via('imap', 8145, '127.0.0.66', 'lan', 'lan-pw', '127.0.0.2');
is($rc, 1, 'untrusted source: its PROXY header does not make lan 127.0.0.66') or diag($out);
is(scalar decisions($t, qr/user="lan" client=127\.0\.0\.2 .*result=network-denied/), 1,
	'untrusted source: logged as itself');
($rc, $out) = via('imap', 8145, '127.0.0.66', 'alice', 'alice-pw', '127.0.0.2');
is($rc, 0, 'untrusted source: an ordinary login still works') or diag($out);
is(scalar decisions($t, qr/user="alice" client=127\.0\.0\.2 .*result=ok/), 1, 'untrusted source: logged as itself');

# another location lists only 127.0.0.2 (its server's 127.0.0.1 is replaced, not added to)

($rc, $out) = via('imap', 8147, '127.0.0.66', 'lan', 'lan-pw');
is($rc, 1, 'other list: 127.0.0.1 is not a balancer there') or diag($out);
is(scalar decisions($t, qr/user="lan" client=127\.0\.0\.1 .*result=network-denied.*auth-other/), 1,
	'other list: logged as 127.0.0.1');
($rc, $out) = via('imap', 8147, '127.0.0.66', 'lan', 'lan-pw', '127.0.0.2');
is($rc, 0, 'other list: 127.0.0.2 is, and names 127.0.0.66') or diag($out);
is(scalar decisions($t, qr/user="lan" client=127\.0\.0\.66 .*result=ok.*auth-other/), 1,
	'other list: logged as 127.0.0.66');

# a trusted balancer naming no address (nginx checks only the characters of a v1 header):
# a temporary failure, never the balancer's own address

($rc, $out) = via('imap', 8145, '999.1.2.3', 'alice', 'alice-pw');
isnt($rc, 0, 'malformed address from the balancer: no login') or diag($out);
like($out, qr/Temporary server problem/, 'malformed address: temporary failure') or diag($out);
like($t->read_file('error.log'),
	qr/\[error\].*user="alice" client=127\.0\.0\.1 .*result=proxy-error reason="Proxy-Protocol-Addr '999\.1\.2\.3' from trusted proxy 127\.0\.0\.1 is not an IP address"/,
	'malformed address: logged at error with the value');

# the alternative: set_real_ip_from 127.0.0.1 in mail {}, no directive of the module

($rc, $out) = via('imap', 8146, '127.0.0.66', 'lan', 'lan-pw');
is($rc, 0, 'set_real_ip_from: lan from 127.0.0.66 logs in') or diag($out);
($rc, $out) = via('imap', 8146, '127.0.0.77', 'lan', 'lan-pw');
is($rc, 1, 'set_real_ip_from: lan from 127.0.0.77 refused') or diag($out);
is(scalar decisions($t, qr/user="lan" client=127\.0\.0\.77 .*result=network-denied.*auth-realip/), 1,
	'set_real_ip_from: logged with the named client');
($rc, $out) = via('imap', 8146, '127.0.0.88', 'alice', "other-$_") for 1 .. 2;
($rc, $out) = via('imap', 8146, '127.0.0.99', 'alice', 'alice-pw');
is($rc, 0, 'set_real_ip_from: failures of 127.0.0.77 and .88 do not lock out 127.0.0.99') or diag($out);
($rc, $out) = via('imap', 8146, '127.0.0.66', 'alice', 'alice-pw', '127.0.0.2');
is($rc, 0, 'set_real_ip_from: a login from an unlisted source') or diag($out);
is(scalar decisions($t, qr/user="alice" client=127\.0\.0\.2 .*result=ok.*auth-realip/), 1,
	'set_real_ip_from: an unlisted source is itself');

###############################################################################
