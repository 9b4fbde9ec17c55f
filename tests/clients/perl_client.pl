# The client scenario through Perl's Cache::Memcached::Fast.
#
#     perl perl_client.pl WRITER READER PREFIX
#
# Writes go through WRITER, reads through READER (HOST:PORT each). Exits
# non-zero at the first check that fails, naming it.
use strict;
use warnings;
use Cache::Memcached::Fast;

my $TOKEN_LIMIT = 2**32;

sub fail { print "FAIL $_[0]\n"; exit 1; }

sub show { defined $_[0] ? "'$_[0]'" : 'undef' }

# Truth, for commands that answer true or false.
sub check_true {
    my ($what, $got, $want) = @_;
    fail("$what: got " . show($got) . ", want " . ($want ? 'true' : 'false')) if (!!$got) != (!!$want);
}

sub check {
    my ($what, $got, $want) = @_;
    fail("$what: got " . show($got) . ", want " . show($want))
        if defined $got != defined $want || (defined $got && $got ne $want);
}

my ($writer, $reader, $p) = @ARGV;
my $a = Cache::Memcached::Fast->new({ servers => [$writer], io_timeout => 5, close_on_error => 1 });
my $b = Cache::Memcached::Fast->new({ servers => [$reader], io_timeout => 5, close_on_error => 1 });
my ($k, $missing) = ("${p}k", "${p}missing");

check_true('set', $a->set($k, 'v1'), 1);
check('get', $b->get($k), 'v1');
check('get missing', $b->get($missing), undef);

$a->set("${p}m1", 'one');
$a->set("${p}m2", 'two');
my $many = $b->get_multi("${p}m1", "${p}m2", $missing);
my $got = join(',', map { "$_=$many->{$_}" } sort keys %$many);
check('multi-get', $got, "${p}m1=one,${p}m2=two");

check_true('add present', $a->add($k, 'x'), 0);
check_true('add absent', $a->add("${p}new", 'n'), 1);
check('get added', $b->get("${p}new"), 'n');
check_true('replace absent', $a->replace($missing, 'x'), 0);
check_true('replace present', $a->replace($k, 'v2'), 1);
check_true('append', $a->append($k, '-tail'), 1);
check_true('prepend', $a->prepend($k, 'head-'), 1);
check_true('append absent', $a->append($missing, 'x'), 0);
check('get after append and prepend', $b->get($k), 'head-v2-tail');

$a->set("${p}n", '10');
check('incr', $a->incr("${p}n", 5), 15);
# decr to zero answers "0E0" (zero, but true): compare as a number.
check('decr below zero', 0 + ($b->decr("${p}n", 20) // -1), 0);
my $counter = $b->get("${p}n");
$counter =~ s/ +$//;    # memcached pads a shrunk counter with spaces
check('get counter', $counter, '0');
check_true('incr absent', $a->incr($missing, 1), 0);

check_true('touch present', $a->touch($k, 100), 1);
check_true('touch absent', $a->touch($missing, 100), 0);

check_true('delete present', $a->delete("${p}new"), 1);
check('get deleted', $b->get("${p}new"), undef);
check_true('delete absent', $a->delete("${p}new"), 0);

my $pair = $a->gets($k) or fail('gets returned nothing');
my ($token, $value) = @$pair;
check('gets value', $value, 'head-v2-tail');
fail("gets token $token is not in (0, 2^32)") unless $token =~ /^\d+$/ && $token > 0 && $token < $TOKEN_LIMIT;
check_true('cas with the fresh token', $b->cas($k, $token, 'swapped'), 1);
check_true('cas with the stale token', $a->cas($k, $token, 'again'), 0);
check('get after cas', $b->get($k), 'swapped');
my ($fresh, $after) = @{ $b->gets($k) };
check('gets after cas', $after, 'swapped');
fail('the token did not change with the value') if $fresh eq $token;
check_true('cas with the new token', $a->cas($k, $fresh, 'again'), 1);

$a->set("${p}alike1", 'same');
$a->set("${p}alike2", 'same');
fail('two keys written alike share a token') if $a->gets("${p}alike1")->[0] eq $a->gets("${p}alike2")->[0];
print "ok perl-cache-memcached-fast\n";
