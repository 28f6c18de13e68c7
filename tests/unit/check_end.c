/*
 * check_end: the end causes. Every cause has a label and a side, labels
 * are unique snake_case (they become metric labels), and the log texts are
 * exactly those the access log has always carried.
 */
#include <check.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "end.h"

START_TEST(test_labels_unique_snake_case)
{
	for (int i = 0; i < END_CAUSES; i++) {
		const char *l = end_label((enum end_cause)i);
		ck_assert_ptr_nonnull(l);
		ck_assert_uint_gt(strlen(l), 0);
		for (const char *p = l; *p; p++)
			ck_assert_msg(islower((unsigned char)*p) || *p == '_', "label %s", l);
		for (int j = 0; j < i; j++)
			ck_assert_str_ne(l, end_label((enum end_cause)j));
		const char *side = end_side_str((enum end_cause)i);
		ck_assert(!strcmp(side, "client") || !strcmp(side, "backend") ||
			  !strcmp(side, "proxy"));
	}
}
END_TEST

struct text_case {
	enum end_cause cause;
	const char *detail;
	const char *want;
	const char *side;
};

static const struct text_case TEXT_CASES[] = {
    {END_CLIENT_EOF, NULL, "client EOF", "client"},
    {END_BACKEND_EOF, NULL, "backend EOF", "backend"},
    {END_CLIENT_ERROR, "Connection reset by peer", "error: Connection reset by peer", "client"},
    {END_BACKEND_ERROR, "Broken pipe", "error: Broken pipe", "backend"},
    {END_IDLE_TIMEOUT, NULL, "idle timeout", "proxy"},
    {END_LIFETIME, NULL, "lifetime limit", "proxy"},
    {END_CLIENT_CLOSE, "1000", "client close 1000", "client"},
    {END_PROTOCOL_ERROR, "invalid UTF-8 (1007)", "invalid UTF-8 (1007)", "proxy"},
    {END_SHUTDOWN, NULL, "shutdown", "proxy"},
    {END_ROUTE_REMOVED, NULL, "route removed", "proxy"},
    {END_BACKEND_CUT, NULL, "backend closed in the middle of the response body", "backend"},
    /* a detail where the text has no room for one is left out */
    {END_SHUTDOWN, "ignored", "shutdown", "proxy"},
    /* a missing detail leaves the rest of the text */
    {END_CLIENT_ERROR, NULL, "error: ", "client"},
};

START_TEST(test_text)
{
	const struct text_case *c = &TEXT_CASES[_i];
	char out[160];
	end_text(c->cause, c->detail, out, sizeof(out));
	ck_assert_str_eq(out, c->want);
	ck_assert_str_eq(end_side_str(c->cause), c->side);
}
END_TEST

START_TEST(test_text_truncates)
{
	char out[8];
	end_text(END_CLIENT_ERROR, "Connection reset by peer", out, sizeof(out));
	ck_assert_str_eq(out, "error: ");
}
END_TEST

static Suite *end_suite(void)
{
	Suite *s = suite_create("end");
	TCase *tc = tcase_create("causes");
	tcase_add_test(tc, test_labels_unique_snake_case);
	tcase_add_loop_test(tc, test_text, 0, (int)(sizeof(TEXT_CASES) / sizeof(TEXT_CASES[0])));
	tcase_add_test(tc, test_text_truncates);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(end_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
