#!/usr/bin/perl

# Tests for ngx-mail-auth: the limiter's controls, through the real mail proxy with real
# clients (imaplib/poplib bound to chosen 127.0.0.x source addresses, so nginx mail sends each
# as Client-IP) and two workers sharing the zones:
#   a) mail_auth_limit_exempt: an exempt client is never counted nor refused
#   b) ipv4_prefix=: clients grouped per /24 share a budget, per /32 they don't
#   c) mail_auth_limit_bans: the live bans listed (JSON) and lifted at run time, behind allow/deny
#   d) per-protocol budgets (pop3:ip=)
#   e) a user's owner is not locked out by a distributed attack on the user
# and nginx -t refusing bad values.

###############################################################################

use warnings;
use strict;

use Test::More;
use JSON::PP qw/ decode_json /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail imap pop3 http/);
workers_can_read($t);
plan(skip_all => 'python3 not installed') unless have_tool('python3');
plan(skip_all => 'curl not installed') unless have_tool('curl');
plan(skip_all => 'no 127.0.0.2 on this host (Linux answers all of 127/8)')
	unless IO::Socket::INET->new(LocalAddr => '127.0.0.2', Proto => 'udp');

my $d = $t->testdir();
$t->write_file('users', "alice:{PLAIN}alice-pw\nbob:{PLAIN}bob-pw\ncarol:{PLAIN}carol-pw\n");

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_passwd_file %%TESTDIR%%/users;
    mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
    mail_auth_backend pop3 127.0.0.1:%%PORT_8111%%;
    mail_auth_fail_wait 0;

    # a) b) c) d): per client (/32), pop3 with a budget of its own
    server {
        listen       127.0.0.1:8080 reuseport;
        server_name  localhost;

        mail_auth_limit zone=main:1m ip=3/m user=100/m ban=120s pop3:ip=2/m;

        location = /auth {
            mail_auth;
            mail_auth_limit_exempt 127.0.0.9 10.0.0.0/8;
        }

        location = /bans {
            allow 127.0.0.1;
            deny all;
            mail_auth_limit_bans;
        }

        location = /bans-from-2 {
            allow 127.0.0.2;
            deny all;
            mail_auth_limit_bans;
        }

        # read from the host, lifted from 127.0.0.2 only
        location = /bans-admin {
            allow 127.0.0.1;
            allow 127.0.0.2;
            deny all;
            mail_auth_limit_bans;
            limit_except GET {
                allow 127.0.0.2;
                deny all;
            }
        }
    }

    # b) per /24
    server {
        listen       127.0.0.1:8081 reuseport;
        server_name  localhost;

        mail_auth_limit zone=grp24:1m ip=3/m ipv4_prefix=24 ban=120s;

        location = /auth { mail_auth; }
        location = /bans { allow 127.0.0.1; deny all; mail_auth_limit_bans; }
    }

    # e) the per-user budget under a distributed attack
    server {
        listen       127.0.0.1:8082 reuseport;
        server_name  localhost;

        mail_auth_limit zone=users:1m ip=100/m user=3/m ban=120s;

        location = /auth { mail_auth; }
        location = /bans { allow 127.0.0.1; deny all; mail_auth_limit_bans; }
    }
}

mail {
    server {
        listen     127.0.0.1:8143;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth;
    }

    server {
        listen     127.0.0.1:8110;
        protocol   pop3;
        auth_http  127.0.0.1:8080/auth;
    }

    server {
        listen     127.0.0.1:8145;
        protocol   imap;
        auth_http  127.0.0.1:8081/auth;
    }

    server {
        listen     127.0.0.1:8146;
        protocol   imap;
        auth_http  127.0.0.1:8082/auth;
    }
}

EOF

my %pw = (alice => 'alice-pw', bob => 'bob-pw', carol => 'carol-pw');
$t->run_daemon(\&MailAuthBackend::imap, port(8144), "$d/backend.log", %pw);
$t->run_daemon(\&MailAuthBackend::pop3, port(8111), "$d/backend.log", %pw);
$t->run()->plan(64);
$t->waitforsocket('127.0.0.1:' . port(8144));
$t->waitforsocket('127.0.0.1:' . port(8111));

###############################################################################

# One login from $src through the mail proxy on $port: 'OK' or 'FAIL ...'.
sub login {
	my ($src, $proto, $port, $user, $pass) = @_;
	# (t/lib/mail_client.py, its socket bound to $src: nginx mail sends $src as Client-IP)
	local $ENV{MAIL_CLIENT_SOURCE} = $src;
	open my $fh, '-|', 'python3', "$FindBin::Bin/lib/mail_client.py", $proto, '127.0.0.1', port($port),
		$user, $pass or die "python3: $!\n";
	local $/;
	my $out = <$fh> // '';
	close $fh;
	$out =~ s/\s+\z//;
	return $out;
}

sub imap { return login($_[0], 'imap', 8143, @_[1, 2]); }

# The decision lines logged for client $ip (results in order).
sub results {
	my ($ip, $user) = @_;
	my @r;
	open my $fh, '<', "$d/error.log" or return '';
	local $/;
	my $log = <$fh> // '';
	for (split /\n/, $log) {
		next unless /client=\Q$ip\E /;
		next if defined $user && !/user="\Q$user\E"/;
		push @r, $1 if /result=([\w-]+)/;
	}
	return join ',', @r;
}

# curl through the real nginx: (HTTP status, body).
sub curl {
	my ($method, $url, @more) = @_;
	my ($rc, $out) = run_tool('curl', '-s', '-X', $method, '-w', '\n%{http_code}', @more, $url);
	my @l = split /\n/, $out;
	my $code = pop @l // '';
	my $body = join("\n", @l);
	$body =~ s/\s+\z//;
	return ($code, $body);
}

# The listing of the bans location on $port: { "client or user" => ban }.
sub bans {
	my ($port) = @_;
	my ($code, $body) = curl('GET', bans_url($port));
	my $j = eval { decode_json($body) } // {};
	return { map { (exists $_->{client} ? "client $_->{client}" : "user $_->{user}") => $_ } @{$j->{bans} // []} };
}

sub bans_url { my ($p, $q) = @_; return "http://127.0.0.1:" . port($p) . "/bans" . ($q // ''); }

###############################################################################

# a) an exempt client keeps logging in after many failures; a non-exempt one is refused

imap('127.0.0.9', 'alice', "exempt-guess-$_") for 1 .. 6;
is(imap('127.0.0.9', 'alice', 'alice-pw') =~ s/ .*//r, 'OK', 'exempt client: right password after 6 failures');
is(results('127.0.0.9'), 'invalid,invalid,invalid,invalid,invalid,invalid,ok',
	'exempt client: every attempt verified and logged, none rate-limited');

imap('127.0.0.10', 'bob', "guess-$_") for 1 .. 3;
like(imap('127.0.0.10', 'bob', 'bob-pw'), qr/^FAIL/, 'non-exempt client: refused after 3 failures');
like(results('127.0.0.10'), qr/^invalid,invalid,invalid,rate-limited$/, 'non-exempt client: rate-limited');

# b) grouping: with ipv4_prefix=24, 127.0.0.2's failures use up 127.0.0.3's budget; per /32
#    (the default), 127.0.0.4's do not touch 127.0.0.5's

login('127.0.0.2', 'imap', 8145, 'alice', "g24-$_") for 1 .. 3;
like(login('127.0.0.3', 'imap', 8145, 'alice', 'alice-pw'), qr/^FAIL/, '/24: a neighbour is refused');
like($t->read_file('error.log'),
	qr/client=127\.0\.0\.3 .*result=rate-limited reason="too many failed logins from 127\.0\.0\.0\/24 /,
	'/24: refusal names the group');
imap('127.0.0.4', 'carol', "g32-$_") for 1 .. 3;
like(imap('127.0.0.4', 'carol', 'carol-pw'), qr/^FAIL/, '/32: the failing client is refused');
like(imap('127.0.0.5', 'carol', 'carol-pw'), qr/^OK/, '/32: its neighbour is not');

# c) the bans, listed and lifted at run time

my ($code, $body) = curl('GET', bans_url(8080));
is($code, 200, 'bans: GET answers');
like($body, qr/^\{"bans":\[/, 'bans: JSON') or diag($body);
my $ban = bans(8080)->{'client 127.0.0.10'} // {};
ok(exists $ban->{protocol} && !defined $ban->{protocol} && $ban->{failures} == 3
	&& $ban->{seconds_left} > 0 && $ban->{seconds_left} <= 120 && $ban->{key} =~ /^[0-9a-f]{16}$/,
	'bans: 127.0.0.10 listed with its failures, seconds left, key') or diag($body);
like($body, qr/"client":"127\.0\.0\.4"/, 'bans: 127.0.0.4 listed');
unlike($body, qr/127\.0\.0\.9"/, 'bans: the exempt client is not');
($code, $body) = curl('GET', bans_url(8081));
like($body, qr/"client":"127\.0\.0\.0\/24"/, 'bans: the /24 listed as a group') or diag($body);

# nginx's own allow/deny guard the location
($code) = curl('GET', "http://127.0.0.1:" . port(8080) . "/bans-from-2");
is($code, 403, 'bans: "deny all" refuses 127.0.0.1');
($code) = curl('DELETE', "http://127.0.0.1:" . port(8080) . "/bans-from-2?client=127.0.0.10");
is($code, 403, 'bans: ... its DELETE too');
($code, $body) = curl('GET', "http://127.0.0.1:" . port(8080) . "/bans-from-2", '--interface', '127.0.0.2');
is($code, 200, 'bans: "allow 127.0.0.2" lets 127.0.0.2 in');
like(imap('127.0.0.10', 'bob', 'bob-pw'), qr/^FAIL/, 'bans: a refused DELETE lifted nothing');

($code, $body) = curl('DELETE', bans_url(8080, '?client=127.0.0.10'));
is("$code $body", '200 {"lifted":1}', 'bans: DELETE ?client= lifts the ban');
like(imap('127.0.0.10', 'bob', 'bob-pw'), qr/^OK/, 'bans: real IMAP login right after lifting');
($code, $body) = curl('DELETE', bans_url(8080, '?client=127.0.0.10'));
is("$code $body", '404 {"lifted":0}', 'bans: nothing left to lift');
($code, $body) = curl('GET', bans_url(8080));
unlike($body, qr/"127\.0\.0\.10"/, 'bans: no longer listed');

# a limit_except block for the methods that lift (nginx's usual way to guard writes): the
# location's handler answers there too (it was nginx's static handler: a bare 405)
($code, $body) = curl('GET', "http://127.0.0.1:" . port(8080) . "/bans-admin");
like("$code $body", qr/^200 .*"client":"127\.0\.0\.4"/, 'bans with limit_except: GET lists');
($code) = curl('DELETE', "http://127.0.0.1:" . port(8080) . "/bans-admin?client=127.0.0.4");
is($code, 403, 'bans with limit_except: the block refuses DELETE from 127.0.0.1');
($code, $body) = curl('DELETE', "http://127.0.0.1:" . port(8080) . "/bans-admin?client=127.0.0.4",
	'--interface', '127.0.0.2');
is("$code $body", '200 {"lifted":1}', 'bans with limit_except: DELETE from 127.0.0.2 lifts');
like(imap('127.0.0.4', 'carol', 'carol-pw'), qr/^OK/, 'bans with limit_except: the client logs in again');

# POST works as DELETE; any address of a /24 group lifts the group
($code, $body) = curl('POST', bans_url(8081, '?client=127.0.0.200'));
is("$code $body", '200 {"lifted":1}', 'bans: POST ?client= (another address of the /24)');
like(login('127.0.0.3', 'imap', 8145, 'alice', 'alice-pw'), qr/^OK/, 'bans: the /24 logs in again');

($code, $body) = curl('DELETE', bans_url(8080, '?nothing=1'));
is($code, 400, 'bans: a bad query is a 400') or diag($body);
($code) = curl('PUT', bans_url(8080));
is($code, 405, 'bans: PUT is not allowed');
like($t->read_file('error.log'), qr/mail_auth_limit_bans: client 127\.0\.0\.10: 1 ban\(s\) lifted/,
	'bans: lifting logged');

# d) per-protocol budgets: pop3:ip=2/m counts POP3 apart from IMAP's ip=3/m

login('127.0.0.6', 'pop3', 8110, 'alice', "p-$_") for 1 .. 2;
like(login('127.0.0.6', 'pop3', 8110, 'alice', 'alice-pw'), qr/^FAIL/, 'pop3: refused after 2 POP3 failures');
like($t->read_file('error.log'), qr/client=127\.0\.0\.6 .*result=rate-limited reason="too many failed logins from 127\.0\.0\.6 \(limit 2\/60s, pop3\)"/,
	'pop3: by its own budget');
like(imap('127.0.0.6', 'alice', 'alice-pw'), qr/^OK/, 'pop3: IMAP from the same client is not refused');
imap('127.0.0.7', 'alice', "i-$_") for 1 .. 3;
like(imap('127.0.0.7', 'alice', 'alice-pw'), qr/^FAIL/, 'imap: refused after 3 IMAP failures');
like(login('127.0.0.7', 'pop3', 8110, 'alice', 'alice-pw'), qr/^OK/, 'imap: POP3 from the same client is not refused');
$ban = bans(8080)->{'client 127.0.0.6'} // {};
is(($ban->{protocol} // 'none') . " $ban->{failures}", 'pop3 2', 'bans: the POP3 ban is listed as such');

# e) distributed attack on alice (user=3/m): 5 addresses, one wrong password each (kept small:
#    each refusal after the ban carries the user's growing Auth-Wait, which nginx sleeps). The owner's
#    client, which logged in successfully before, still gets in; a client that never did is
#    refused until the ban ends (or is lifted).

my $u = 8146;
my $ub = 8082;
like(login('127.0.0.20', 'imap', $u, 'alice', 'alice-pw'), qr/^OK/, 'user: the owner logs in');
login("127.0.0.$_", 'imap', $u, 'alice', "attack-$_") for 30 .. 34;
like(results('127.0.0.34', 'alice'), qr/^rate-limited$/, 'user: the attack reaches the per-user ban');
like(login('127.0.0.40', 'imap', $u, 'alice', 'alice-pw'), qr/^FAIL/,
	'user: a client that never logged in as alice is refused, even with the right password');
like(login('127.0.0.20', 'imap', $u, 'alice', 'alice-pw'), qr/^OK/, 'user: the owner\'s client still logs in');
like(login('127.0.0.20', 'imap', $u, 'alice', 'alice-pw'), qr/^OK/, 'user: ... again');
like(login('127.0.0.41', 'imap', $u, 'bob', 'bob-pw'), qr/^OK/, 'user: other users are not affected');
# the bans and their records live in the shared zone: kept across a reload
$t->reload();
ok(wait_for(5, sub { $t->read_file('error.log') =~ /gracefully shutting down/ }), 'reloaded');
select undef, undef, undef, 0.5;
like(login('127.0.0.40', 'imap', $u, 'alice', 'alice-pw'), qr/^FAIL/, 'user: still refused after the reload');
$ban = bans($ub)->{'user alice'} // {};
is($ban->{failures}, 3, 'user: the user ban is listed after the reload');
($code, $body) = curl('DELETE', bans_url($ub, '?user=ALICE'));
is("$code $body", '200 {"lifted":1}', 'user: DELETE ?user= lifts it (any spelling)');
like(login('127.0.0.40', 'imap', $u, 'alice', 'alice-pw'), qr/^OK/, 'user: then a new client gets in');

# nginx -t refuses bad values with a clear message

sub nginx_t {
	my ($name, $limit, $loc, $bans) = @_;
	$bans //= '';
	$t->write_file_expand($name, <<"EOF");

%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    $limit

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file $d/users;
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
            $loc
        }

        location = /bans {
            mail_auth_limit_bans;
            $bans
        }
    }
}

EOF
	# its own error log: a failure must not reach the running nginx's error.log
	my $text = $t->read_file($name);
	$text =~ s!^(\s*error_log\s+)\S*error\.log!$1$d/error-t.log!mg;
	$t->write_file($name, $text);
	return run_tool($Test::Nginx::NGINX, '-t', '-p', "$d/", '-c', $name, '-e', 'error-t.log');
}

for my $case (
	['mail_auth_limit zone=t1:64k ip=5/m ipv4_prefix=24 ipv6_prefix=48 smtp:ip=1/m imap:user=3/h;',
		'mail_auth_limit_exempt 10.0.0.0/8 2001:db8::/32 127.0.0.9;', undef],
	['mail_auth_limit zone=t2:64k ip=5/m ipv4_prefix=16;', '', qr/ipv4_prefix=16 is invalid: a prefix length from 24 to 32/],
	['mail_auth_limit zone=t3:64k ip=5/m ipv4_prefix=33;', '', qr/ipv4_prefix=33 is invalid/],
	['mail_auth_limit zone=t4:64k ip=5/m ipv6_prefix=72;', '', qr/ipv6_prefix=72 is invalid: a prefix length from 48 to 64/],
	['mail_auth_limit zone=t5:64k ip=5/m ipv6_prefix=32;', '', qr/ipv6_prefix=32 is invalid/],
	['mail_auth_limit zone=t6:64k ip=5/m lmtp:ip=1/m;', '', qr/unknown parameter "lmtp:ip"/],
	['mail_auth_limit zone=t7:64k ban=5s;', '', qr/needs ip=RATE and\/or user=RATE/],
	['mail_auth_limit zone=t10:64k ip=5/m ban=25h;', '', qr/ban: time "25h" is too long \(24h at most\)/],
	['mail_auth_limit zone=t8:64k ip=5/m;', 'mail_auth_limit_exempt 10.0.0.0/33;',
		qr/mail_auth_limit_exempt": invalid network "10\.0\.0\.0\/33"/],
	['', '', qr/"mail_auth_limit_bans" needs a "mail_auth_limit" in effect/],
) {
	my ($limit, $loc, $err) = @$case;
	my ($rc, $out) = nginx_t('t.conf', $limit, $loc);
	if (!defined $err) {
		is($rc, 0, 'nginx -t: every new parameter accepted') or diag($out);
		like($out, qr/\[warn\].*"mail_auth_limit_bans" in location "\/bans" without a "deny" rule, "auth_basic" or "auth_request": whoever reaches it can read the bans/,
			'nginx -t: a ban listing open to whoever reaches it is warned about') or diag($out);
	} else {
		ok($rc != 0 && $out =~ /\[emerg\].*$err/, "nginx -t refuses: $limit $loc") or diag($out);
	}
}

# ... not when a deny rule or auth_basic restrict it; allow rules alone restrict nothing (nginx
# lets a request that matches no rule through)
for my $bans ('allow 127.0.0.1; deny all;', 'deny 192.0.2.0/24;',
	"auth_basic ops; auth_basic_user_file $d/users;", 'allow all;', 'allow unix:;')
{
	my ($rc, $out) = nginx_t('t.conf', 'mail_auth_limit zone=t9:64k ip=5/m;', '', $bans);
	my $warned = $out =~ /mail_auth_limit_bans" in location "\/bans" without a "deny" rule/;
	if ($bans =~ /^allow (all|unix:);$/) {
		ok($rc == 0 && $warned, "nginx -t: still the warning with only $bans") or diag($out);
	} else {
		ok($rc == 0 && !$warned, "nginx -t: no warning with $bans") or diag($out);
	}
}

###############################################################################

# nginx_t refers to $t: let the harness's final checks (no alerts) run now, before Test::More
# counts the tests at exit
undef $t;

###############################################################################
