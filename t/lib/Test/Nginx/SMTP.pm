package Test::Nginx::SMTP;

# SMTP client for tests (same API as the official suite's Test::Nginx::SMTP).

use warnings;
use strict;

use base qw/ Test::Nginx::Mail /;
use Test::More qw//;

sub new {
	my ($class, %args) = @_;
	return $class->connect_client(8025, %args);
}

# reads a whole (possibly multi-line) reply, returns its last line
sub read {
	my ($self) = @_;
	my $line;
	do { $line = $self->getline() } while defined $line and $line =~ /^\d\d\d-/;
	return $line;
}

sub ok {
	my $self = shift;
	Test::More->builder->like($self->read() // '', qr/^2\d\d /, @_);
}

sub authok {
	my $self = shift;
	Test::More->builder->like($self->read() // '', qr/^235 /, @_);
}

1;
