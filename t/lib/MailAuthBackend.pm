package MailAuthBackend;

# A fake IMAP / POP3 / SMTP backend for the tests (written for this project). It speaks what
# nginx's mail proxy sends to a backend (src/mail/ngx_mail_proxy_module.c):
#   IMAP:  "<tag> LOGIN {n}" + literal user " {m}" + literal password
#   POP3:  "USER u" / "PASS p"
#   SMTP:  EHLO/HELO, then "XCLIENT ... LOGIN=u ..." (xclient on) and/or "AUTH PLAIN ..."
#          (proxy_smtp_auth on); then MAIL/RCPT/DATA (a message is logged as "smtp data ...")
# It accepts a login only when user and password match one of the expected pairs, and appends
# one line per login to a log file in the test directory:
#     <proto> <ok|fail> user=<user> pass=<pass> [xclient=<line>]
# so tests assert exactly what nginx passed on (and whether the backend was reached at all).
#
# usage: $t->run_daemon(\&MailAuthBackend::imap, port(8144), "$d/backend.log", alice => 'pw', ...)

use warnings;
use strict;

use IO::Socket::INET;
use MIME::Base64 qw/ decode_base64 /;

# A backlog above any test's concurrency: with 32, the 50 sessions of an IMAP storm overflowed
# the accept queue (TcpExtListenOverflows), nginx's connect to the backend waited on SYN
# retransmissions (1, 2, 4, 8 s) and a login could time out on the client's side.
sub serve {
	my ($port, $handler) = @_;
	my $server = IO::Socket::INET->new(
		Proto => 'tcp', LocalAddr => "127.0.0.1:$port", Listen => 1024, Reuse => 1,
	) or die "Can't create backend listener on $port: $!\n";
	local $SIG{CHLD} = 'IGNORE';
	while (my $client = $server->accept()) {
		$client->autoflush(1);
		my $pid = fork();
		if (defined $pid && $pid == 0) {
			close $server;
			eval { $handler->($client); };
			close $client;
			exit 0;
		}
		close $client;
	}
}

sub record {
	my ($log, $line) = @_;
	open my $fh, '>>', $log or return;
	print $fh "$line\n";
	close $fh;
}

# an expected password of '*' accepts any password (for tests where the password changes)
sub ok_login {
	my ($users, $user, $pass) = @_;
	return 0 unless defined $user && defined $pass && exists $users->{$user};
	return $users->{$user} eq '*' || $users->{$user} eq $pass;
}

sub readline_crlf {
	my ($c) = @_;
	my $l = <$c>;
	return undef unless defined $l;
	$l =~ s/\r?\n\z//;
	return $l;
}

sub read_literal {
	my ($c, $n) = @_;
	my $buf = '';
	while (length $buf < $n) {
		my $r = read($c, $buf, $n - length $buf, length $buf);
		return undef unless $r;
	}
	return $buf;
}

sub imap {
	my ($port, $log, %users) = @_;
	serve($port, sub {
		my ($c) = @_;
		print $c "* OK fake IMAP backend ready\r\n";
		while (defined(my $l = readline_crlf($c))) {
			my ($tag, $cmd, $rest) = $l =~ /^(\S+) (\S+) ?(.*)$/ or next;
			$cmd = uc $cmd;
			if ($cmd eq 'LOGIN') {
				my ($user, $pass);
				if ($rest =~ /^\{(\d+)\}$/) {
					print $c "+ OK\r\n";
					$user = read_literal($c, $1);
					my $tail = readline_crlf($c);
					if (defined $tail && $tail =~ /^ \{(\d+)\}$/) {
						print $c "+ OK\r\n";
						$pass = read_literal($c, $1);
						readline_crlf($c);
					}
				} else {
					($user, $pass) = split / /, $rest, 2;
				}
				my $ok = ok_login(\%users, $user, $pass);
				record($log, "imap " . ($ok ? 'ok' : 'fail') . " user=$user pass=$pass");
				print $c $ok ? "$tag OK LOGIN completed\r\n" : "$tag NO [AUTHENTICATIONFAILED] backend refused\r\n";
			} elsif ($cmd eq 'LOGOUT') {
				print $c "* BYE\r\n$tag OK LOGOUT completed\r\n";
				return;
			} elsif ($cmd eq 'SELECT') {
				print $c "* 1 EXISTS\r\n$tag OK [READ-WRITE] SELECT completed\r\n";
			} else {
				print $c "$tag OK $cmd completed\r\n";
			}
		}
	});
}

sub pop3 {
	my ($port, $log, %users) = @_;
	serve($port, sub {
		my ($c) = @_;
		print $c "+OK fake POP3 backend ready\r\n";
		my $user;
		while (defined(my $l = readline_crlf($c))) {
			my ($cmd, $arg) = $l =~ /^(\S+) ?(.*)$/ or next;
			$cmd = uc $cmd;
			if ($cmd eq 'USER') {
				$user = $arg;
				print $c "+OK\r\n";
			} elsif ($cmd eq 'PASS') {
				my $ok = ok_login(\%users, $user, $arg);
				record($log, "pop3 " . ($ok ? 'ok' : 'fail') . " user=$user pass=$arg");
				print $c $ok ? "+OK logged in\r\n" : "-ERR backend refused\r\n";
			} elsif ($cmd eq 'QUIT') {
				print $c "+OK bye\r\n";
				return;
			} elsif ($cmd eq 'STAT') {
				print $c "+OK 0 0\r\n";
			} else {
				print $c "+OK\r\n";
			}
		}
	});
}

sub smtp {
	my ($port, $log, %users) = @_;
	serve($port, sub {
		my ($c) = @_;
		print $c "220 fake SMTP backend ready\r\n";
		my ($from, $to) = ('', '');
		while (defined(my $l = readline_crlf($c))) {
			my ($cmd, $arg) = $l =~ /^(\S+) ?(.*)$/ or next;
			$cmd = uc $cmd;
			if ($cmd eq 'MAIL') {
				$from = $arg;
				print $c "250 2.1.0 OK\r\n";
			} elsif ($cmd eq 'RCPT') {
				$to = $arg;
				print $c "250 2.1.5 OK\r\n";
			} elsif ($cmd eq 'DATA') {
				# one message: recorded as "smtp data from=<MAIL arg> to=<last RCPT arg> lines=N"
				print $c "354 go ahead\r\n";
				my $n = 0;
				while (defined(my $d = readline_crlf($c))) {
					last if $d eq '.';
					$n++;
				}
				record($log, "smtp data from=$from to=$to lines=$n");
				print $c "250 2.0.0 queued\r\n";
			} elsif ($cmd eq 'EHLO') {
				print $c "250-fake\r\n250-XCLIENT ADDR LOGIN NAME HELO\r\n250 AUTH PLAIN\r\n";
			} elsif ($cmd eq 'HELO') {
				print $c "250 fake\r\n";
			} elsif ($cmd eq 'XCLIENT') {
				my ($user) = $arg =~ /LOGIN=(\S+)/;
				record($log, "smtp xclient user=" . ($user // '') . " xclient=$arg");
				print $c "220 fake SMTP backend ready\r\n";
			} elsif ($cmd eq 'AUTH') {
				my (undef, $b64) = split / /, $arg, 2;
				my (undef, $user, $pass) = split /\0/, decode_base64($b64 // ''), 3;
				my $ok = ok_login(\%users, $user, $pass);
				record($log, "smtp " . ($ok ? 'ok' : 'fail') . " user=$user pass=$pass");
				print $c $ok ? "235 2.7.0 ok\r\n" : "535 5.7.8 backend refused\r\n";
			} elsif ($cmd eq 'QUIT') {
				print $c "221 bye\r\n";
				return;
			} else {
				print $c "250 OK\r\n";
			}
		}
	});
}



# A tiny HTTP authentication service for auth_request tests: answers 204 when the request's
# Authorization header is one of the expected values, 401 otherwise, and logs every header it
# got as "authorization=<value>" to $log.
sub http_auth {
	my ($port, $log, @expected) = @_;
	my %ok = map { $_ => 1 } @expected;
	serve($port, sub {
		my ($c) = @_;
		my $auth = '';
		while (defined(my $l = readline_crlf($c))) {
			last if $l eq '';
			$auth = $1 if $l =~ /^Authorization:\s*(.*)$/i;
		}
		record($log, "authorization=$auth");
		my $status = $ok{$auth} ? '204 No Content' : '401 Unauthorized';
		print $c "HTTP/1.0 $status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
	});
}
1;
