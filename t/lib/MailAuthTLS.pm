package MailAuthTLS;

# Test certificates made at test time with the openssl CLI (written for this project): a test
# CA, a server certificate for 127.0.0.1, client certificates signed by the CA, and self-signed
# ("rogue") ones. Files go to the test directory as NAME.crt / NAME.key.
#
# Functions (exported; $t is the Test::Nginx object or a directory). Each returns the
# certificate's path, or in list context (certificate, key):
#
#   my ($ca, $ca_key) = make_ca($t);        # ca.crt, ca.key (made once, then reused)
#   my ($crt, $key) = make_server_cert($t); # server.crt/.key: CN=127.0.0.1, SAN IP:127.0.0.1
#                                           # and DNS:localhost, signed by the CA
#   my ($crt, $key) = make_client_cert($t, 'alice');              # alice.crt/.key, CN=alice,
#                                                                 # signed by the CA
#   my ($crt, $key) = make_client_cert($t, 'alice', rogue => 1);  # rogue-alice.crt/.key,
#                                                                 # CN=alice, self-signed
#       options: name => 'file base name' (instead of the CN / rogue-CN),
#                subject => '/O=Example/CN=alice' (instead of /CN=$cn)
#   my $fp = cert_fingerprint($crt);        # SHA-1 "AB:CD:..", as Auth-SSL-Fingerprint
#
# make_server_cert / make_client_cert make the CA first if there is none yet. Keys are EC
# P-256; certificates are valid for 2 days; their extensions come from a config file written
# here (not the system's openssl.cnf): CA:TRUE + keyCertSign for the CA, serverAuth /
# clientAuth for the others. openssl's output goes to openssl.log in the directory.
#
# The object interface (t/mail_auth_sasl.t) writes the same kind of files, with RSA keys:
#
#   my $tls = MailAuthTLS->new($t->testdir());
#   $tls->ca();                          # ca.crt, ca.key
#   $tls->server('server');              # server.crt for CN/SAN 127.0.0.1
#   $tls->client('alice', '/CN=alice');  # alice.crt, signed by the CA
#   $tls->rogue('rogue', '/CN=alice');   # rogue.crt, self-signed

use warnings;
use strict;

use base qw/ Exporter /;
our @EXPORT = qw/ make_ca make_server_cert make_client_cert cert_fingerprint /;

sub tls_dir {
	my ($t) = @_;
	my $dir = ref $t ? $t->testdir() : $t;
	die "MailAuthTLS: no such directory\n" unless defined $dir && -d $dir;
	return $dir;
}

# openssl with an argument list (no shell), its output appended to openssl.log
sub run_openssl {
	my ($dir, @args) = @_;
	my $log = "$dir/openssl.log";
	my $pid = fork();
	die "fork: $!\n" unless defined $pid;
	if ($pid == 0) {
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', $log or exit 127;
		open STDERR, '>&', \*STDOUT;
		exec('openssl', @args) or exit 127;
	}
	waitpid($pid, 0);
	die "openssl @args failed, see $log\n" if $?;
}

sub tls_config {
	my ($dir) = @_;
	my $cnf = "$dir/mail-auth-tls.cnf";
	return $cnf if -e $cnf;
	open my $fh, '>', $cnf or die "$cnf: $!\n";
	print $fh <<'EOF';
[ req ]
distinguished_name = dn
[ dn ]
[ ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ server ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ client ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
	close $fh or die "$cnf: $!\n";
	return $cnf;
}

sub cert_result {
	my ($crt, $key) = @_;
	return wantarray ? ($crt, $key) : $crt;
}

my @ec_key = ('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes');

sub make_ca {
	my ($t) = @_;
	my $dir = tls_dir($t);
	my ($crt, $key) = ("$dir/ca.crt", "$dir/ca.key");
	unless (-s $crt && -s $key) {
		run_openssl($dir, 'req', '-x509', '-config', tls_config($dir), '-extensions', 'ca',
			@ec_key, '-days', '2', '-subj', '/O=ngx-mail-auth test/CN=ngx-mail-auth test CA',
			'-keyout', $key, '-out', $crt);
	}
	return cert_result($crt, $key);
}

# "/CN=$cn", with the characters -subj treats specially escaped
sub subject_cn {
	my ($cn) = @_;
	$cn =~ s{([/=+\\])}{\\$1}g;
	return "/CN=$cn";
}

sub file_base {
	my ($name) = @_;
	$name =~ s/[^A-Za-z0-9._-]/_/g;
	$name = "_$name" if $name eq '' or $name =~ /^\./;
	return $name;
}

sub ca_signed {
	my ($dir, $base, $subject, $section) = @_;
	make_ca($dir);
	my ($crt, $key, $csr) = map { "$dir/$base.$_" } qw/ crt key csr /;
	my $cnf = tls_config($dir);
	run_openssl($dir, 'req', '-new', '-config', $cnf, @ec_key, '-subj', $subject,
		'-keyout', $key, '-out', $csr);
	run_openssl($dir, 'x509', '-req', '-in', $csr, '-CA', "$dir/ca.crt",
		'-CAkey', "$dir/ca.key", '-days', '2',
		'-set_serial', sprintf('0x%x%06x', time(), int(rand(0xffffff))),
		'-extfile', $cnf, '-extensions', $section, '-out', $crt);
	unlink $csr;
	return ($crt, $key);
}

sub make_server_cert {
	my ($t, %o) = @_;
	my $dir = tls_dir($t);
	return cert_result(ca_signed($dir, file_base($o{name} // 'server'),
		$o{subject} // '/CN=127.0.0.1', 'server'));
}

sub make_client_cert {
	my ($t, $cn, %o) = @_;
	die "make_client_cert: no CN\n" unless defined $cn && length $cn;
	my $dir = tls_dir($t);
	my $subject = $o{subject} // subject_cn($cn);
	return cert_result(ca_signed($dir, file_base($o{name} // $cn), $subject, 'client'))
		unless $o{rogue};

	# self-signed, with a client certificate's extensions: no CA of the test vouches for it
	my $base = file_base($o{name} // "rogue-$cn");
	my ($crt, $key) = ("$dir/$base.crt", "$dir/$base.key");
	run_openssl($dir, 'req', '-x509', '-config', tls_config($dir), '-extensions', 'client',
		@ec_key, '-days', '2', '-subj', $subject, '-keyout', $key, '-out', $crt);
	return cert_result($crt, $key);
}

sub cert_fingerprint {
	my ($crt) = @_;
	open my $fh, '-|', 'openssl', 'x509', '-in', $crt, '-noout', '-fingerprint', '-sha1'
		or die "openssl: $!\n";
	my $fp = <$fh> // '';
	close $fh;
	$fp =~ s/^.*=//;
	$fp =~ s/\s+//g;
	die "no fingerprint for $crt\n" unless $fp =~ /^[0-9A-F:]+$/;
	return $fp;
}

###############################################################################
# The object interface.

sub new {
	my ($class, $dir) = @_;
	return bless { dir => $dir }, $class;
}

sub openssl {
	my ($self, @args) = @_;
	my $d = $self->{dir};
	system(join(' ', 'openssl', map { "'$_'" } @args) . " >>'$d/openssl.log' 2>&1") == 0
		or die "openssl @args failed, see $d/openssl.log\n";
}

sub ca {
	my ($self) = @_;
	my $d = $self->{dir};
	$self->openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
		'-subj', '/O=ngx-mail-auth test CA/CN=Test CA',
		'-keyout', "$d/ca.key", '-out', "$d/ca.crt");
	return "$d/ca.crt";
}

sub signed {
	my ($self, $name, $subj, $ext) = @_;
	my $d = $self->{dir};
	$self->openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', $subj,
		'-keyout', "$d/$name.key", '-out', "$d/$name.csr");
	open my $fh, '>', "$d/$name.ext" or die "$d/$name.ext: $!\n";
	print $fh $ext;
	close $fh;
	$self->openssl('x509', '-req', '-in', "$d/$name.csr", '-CA', "$d/ca.crt",
		'-CAkey', "$d/ca.key", '-CAcreateserial', '-days', '2',
		'-extfile', "$d/$name.ext", '-out', "$d/$name.crt");
	return "$d/$name.crt";
}

sub server {
	my ($self, $name) = @_;
	return $self->signed($name, '/CN=127.0.0.1', "subjectAltName=IP:127.0.0.1\n");
}

sub client {
	my ($self, $name, $subj) = @_;
	return $self->signed($name, $subj, "basicConstraints=CA:FALSE\n");
}

sub rogue {
	my ($self, $name, $subj) = @_;
	my $d = $self->{dir};
	$self->openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
		'-subj', $subj, '-keyout', "$d/$name.key", '-out', "$d/$name.crt");
	return "$d/$name.crt";
}

# The SHA-1 fingerprint (hex, colons) as nginx's Auth-SSL-Fingerprint reports it.
sub fingerprint {
	my ($self, $name) = @_;
	my $fp = `openssl x509 -in '$self->{dir}/$name.crt' -noout -fingerprint -sha1`;
	$fp =~ s/^.*=//;
	$fp =~ s/\s+//g;
	return $fp;
}

1;
