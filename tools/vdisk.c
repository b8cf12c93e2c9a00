/* vdisk: the offline command-line tool.
 *
 * "vdisk COMMAND [options] FILE..." in the spirit of qemu-img: same
 * subcommands, options, size suffixes, JSON keys and exit codes, so scripts
 * written for qemu-img keep working, with friendlier messages and defaults.
 * This file only dispatches; each command lives in its own cmd-*.c.
 */
#include <locale.h>
#include <stdlib.h>

#include "cli.h"
#include "config.h"
#include "voice.h"

static const CliCommand *const commands[] = {
    &cli_cmd_info,    &cli_cmd_create,   &cli_cmd_convert, &cli_cmd_check,
    &cli_cmd_compare, &cli_cmd_map,      &cli_cmd_resize,  &cli_cmd_rebase,
    &cli_cmd_commit,  &cli_cmd_snapshot, &cli_cmd_amend,   &cli_cmd_import_vm,
    &cli_cmd_measure, &cli_cmd_dd,       &cli_cmd_bitmap,  &cli_cmd_serve,
};

static const CliCommand *find_command(const char *name)
{
    for (gsize i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (g_str_equal(commands[i]->name, name))
            return commands[i];
    }
    return NULL;
}

static void print_global_help(FILE *stream)
{
    g_autofree char *formats = g_strjoinv(", ", (char **)vd_formats());

    fprintf(stream, "Usage: vdisk COMMAND [OPTIONS] FILE...\n"
                    "\n"
                    "Inspect, create, convert, check and change virtual disk images.\n"
                    "Options and output follow qemu-img, so its scripts work unchanged.\n"
                    "\n"
                    "Commands:\n");
    for (gsize i = 0; i < G_N_ELEMENTS(commands); i++)
        fprintf(stream, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(stream,
            "  %-10s %s\n"
            "\n"
            "Options:\n"
            "  -h, --help     show this help\n"
            "  -V, --version  show the version\n"
            "\n"
            "Formats: %s\n"
            "Sizes take the suffixes K, M, G, T, P, E (powers of 1024), like qemu-img.\n"
            "An image may be an NBD export on another host, as qemu-img names one:\n"
            "nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH.\n"
            "\n"
            "Run 'vdisk help COMMAND' or 'vdisk COMMAND --help' for a command's options.\n",
            "help", "show help for a command", formats);
}

static int run_help(int argc, char **argv)
{
    const CliCommand *cmd;

    if (argc < 1) {
        print_global_help(stdout);
        return EXIT_SUCCESS;
    }
    cmd = find_command(argv[0]);
    if (cmd == NULL) {
        cli_error("no command '%s'; 'vdisk --help' lists them", argv[0]);
        return CLI_EXIT_FAILURE;
    }
    cli_print_command_help(cmd, stdout);
    return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
    const char *name;
    const CliCommand *cmd;

    setlocale(LC_ALL, "");
    /* Numbers in output must stay machine-readable whatever the locale. */
    setlocale(LC_NUMERIC, "C");
    /* Run as "qemu-img", vdisk speaks as qemu-img (voice.h). */
    voice_init(argv[0]);
    cli_install_log_handler();

    if (argc < 2 && voice_is_qemu()) {
        cli_error("Not enough arguments");
        voice_try_help(NULL);
        return CLI_EXIT_FAILURE;
    }
    if (argc < 2) {
        print_global_help(stderr);
        return CLI_EXIT_FAILURE;
    }
    name = argv[1];
    if (g_str_equal(name, "--help") || g_str_equal(name, "-h")) {
        print_global_help(stdout);
        return EXIT_SUCCESS;
    }
    if (g_str_equal(name, "--version") || g_str_equal(name, "-V")) {
        /* Scripts read qemu-img's version to know what it can do: vdisk
         * does what 7.2's does. */
        if (voice_is_qemu())
            printf("qemu-img version 7.2.0 (vdisk %s)\n", VDISK_VERSION);
        else
            printf("vdisk version %s\n", VDISK_VERSION);
        return EXIT_SUCCESS;
    }
    if (g_str_equal(name, "help"))
        return run_help(argc - 2, argv + 2);

    cmd = find_command(name);
    if (cmd == NULL) {
        cli_error("no command '%s'; 'vdisk --help' lists them", name);
        if (voice_is_qemu())
            voice_try_help(NULL);
        return CLI_EXIT_FAILURE;
    }
    /* The command sees argv[0] = its own name, like a program of its own. */
    return cmd->run(cmd, argc - 1, argv + 1);
}
